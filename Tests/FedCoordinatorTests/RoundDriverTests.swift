import Foundation
import Testing

@testable import FedCoordinator

/// The driver executes actions in the order they were produced under the engine's lock, from
/// however many threads, and ticks the engine while the queue is idle.
@Suite("Round driver")
struct RoundDriverTests {
    /// Stands for the engine and what became of its actions.
    final class Record: @unchecked Sendable {
        // @unchecked: every field is guarded by `lock`.
        let lock = NSLock()
        var produced: UInt64 = 0
        var executed: [UInt64] = []
        var threads = Set<pthread_t>()
        var ticks = 0
    }

    /// An action carrying a sequence number (the driver never looks inside).
    static func action(_ sequence: UInt64) -> RoundStateMachine.Action {
        .cancel("agent", roundID: sequence, attempt: 0, reason: "")
    }

    @Test("Actions posted by 8 threads under one lock run in the lock's order, on one thread, with ticks in between")
    func orderAcrossThreads() throws {
        let driver = RoundDriver(tickInterval: 0.005)
        let record = Record()
        let done = DispatchSemaphore(value: 0)
        Thread {
            driver.run(tick: { record.lock.withLock { record.ticks += 1 } }) { action in
                guard case .cancel(_, let sequence, _, _) = action else { return }
                record.lock.withLock {
                    record.executed.append(sequence)
                    record.threads.insert(pthread_self())
                }
            }
            done.signal()
        }.start()
        DispatchQueue.concurrentPerform(iterations: 8) { worker in
            for index in 0..<500 {
                // Like a change of the engine: two actions from one call, queued before the lock goes.
                record.lock.withLock {
                    record.produced += 1
                    driver.post([Self.action(2 * record.produced - 1), Self.action(2 * record.produced)])
                }
                if (index + worker) % 97 == 0 { usleep(1_000) }
            }
        }
        let deadline = Date(timeIntervalSinceNow: 10)
        while record.lock.withLock({ record.executed.count }) < 8000 && Date() < deadline { usleep(10_000) }
        usleep(50_000)  // idle: the ticks go on
        driver.stop()
        #expect(done.wait(timeout: .now() + 5) == .success)
        record.lock.withLock {
            #expect(record.executed == Array(1...8000))
            #expect(record.threads.count == 1)
            #expect(record.ticks >= 3, "ticks: \(record.ticks)")
        }
    }
}
