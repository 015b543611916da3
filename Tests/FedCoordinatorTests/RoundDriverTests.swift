import Foundation
import Testing

@testable import FedCoordinator

/// The driver applies events in the order they were posted, from however many threads, on its
/// one thread, executes each event's actions before the next event, answers the events it is
/// sent, and ticks the engine while the queue is idle.
@Suite("Round driver")
struct RoundDriverTests {
    /// What became of the events and their actions.
    final class Record: @unchecked Sendable {
        // @unchecked: every field is guarded by `lock`.
        let lock = NSLock()
        var posted: UInt64 = 0
        /// Each event's number as it was applied, and each action's as it was executed.
        var trace: [String] = []
        var threads = Set<pthread_t>()
        var ticks = 0
    }

    /// An action carrying a sequence number (the driver never looks inside).
    static func action(_ sequence: UInt64) -> RoundStateMachine.Action {
        .cancel("agent", roundID: sequence, attempt: 0, reason: "")
    }

    static func started(_ record: Record) -> (RoundDriver, DispatchSemaphore) {
        let driver = RoundDriver(engine: RoundStateMachine(policy: RoundStateMachineTests.policy(), now: 0), tickInterval: 0.005)
        let done = DispatchSemaphore(value: 0)
        Thread {
            driver.run(tick: { _ in
                record.lock.withLock { record.ticks += 1 }
                return []
            }) { action in
                guard case .cancel(_, let sequence, _, _) = action else { return }
                record.lock.withLock {
                    record.trace.append("action \(sequence)")
                    record.threads.insert(pthread_self())
                }
            }
            done.signal()
        }.start()
        return (driver, done)
    }

    @Test("Events posted by 8 threads apply in posting order on one thread, each one's actions executed before the next event")
    func orderAcrossThreads() throws {
        let record = Record()
        let (driver, done) = Self.started(record)
        DispatchQueue.concurrentPerform(iterations: 8) { worker in
            for index in 0..<500 {
                record.lock.withLock {
                    record.posted += 1
                    let sequence = record.posted
                    driver.post { _ in
                        record.lock.withLock {
                            record.trace.append("event \(sequence)")
                            record.threads.insert(pthread_self())
                        }
                        return [Self.action(sequence)]
                    }
                }
                if (index + worker) % 97 == 0 { usleep(1_000) }
            }
        }
        // A sent event comes back with its value once applied; its action runs right after it.
        let value: Int = driver.perform { engine in
            record.lock.withLock { record.trace.append("event 4001") }
            return (engine.participation.count + 42, [Self.action(4001)])
        }
        #expect(value == 42)
        let deadline = Date(timeIntervalSinceNow: 10)
        while record.lock.withLock({ record.trace.count }) < 8002 && Date() < deadline { usleep(10_000) }
        usleep(50_000)  // idle: the ticks go on
        driver.stop()
        #expect(done.wait(timeout: .now() + 5) == .success)
        record.lock.withLock {
            #expect(record.trace == (1...4001).flatMap { ["event \($0)", "action \($0)"] })
            #expect(record.threads.count == 1)
            #expect(record.ticks >= 3, "ticks: \(record.ticks)")
        }
    }

    @Test("On stop the driver applies the events still queued without their actions; afterwards a sent event is answered at once")
    func stopDrains() throws {
        let record = Record()
        let (driver, done) = Self.started(record)
        let inFirst = DispatchSemaphore(value: 0), release = DispatchSemaphore(value: 0)
        driver.post { _ in
            inFirst.signal()
            release.wait()
            return []
        }
        inFirst.wait()  // the driver is inside the first event: the next ones stay queued
        driver.post { _ in
            record.lock.withLock { record.trace.append("event 1") }
            return [Self.action(1)]
        }
        let answered = DispatchSemaphore(value: 0)
        Thread {
            let value: Int = driver.perform { _ in
                record.lock.withLock { record.trace.append("event 2") }
                return (2, [Self.action(2)])
            }
            if value == 2 { answered.signal() }
        }.start()
        // Whether the sent event is queued before the stop (and drained) or after the driver ends
        // (applied by its caller), it is applied once and answered.
        driver.stop()
        release.signal()
        #expect(answered.wait(timeout: .now() + 5) == .success, "the sent event was answered")
        #expect(done.wait(timeout: .now() + 5) == .success)
        record.lock.withLock { #expect(record.trace.sorted() == ["event 1", "event 2"], "applied, no action executed: \(record.trace)") }

        driver.post { _ in
            record.lock.withLock { record.trace.append("after stop") }
            return [Self.action(3)]
        }
        let version: UInt64 = driver.perform { engine in (engine.modelVersion + 7, [Self.action(4)]) }
        #expect(version == 7)
        #expect(driver.read(\.modelVersion) == 0)
        record.lock.withLock { #expect(record.trace.count == 2, "nothing is posted once stopped: \(record.trace)") }
    }
}
