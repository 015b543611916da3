import FedAgent
import FedWire
import Foundation
import Testing

/// The waits that replaced sleep-polling: woken at once by the change they wait for, and
/// otherwise at their deadline.
@Suite("Cancellation and wait signals")
struct CancellationTests {
    @Test("A cancellation wakes its waiter at once, runs each handler once, and a late handler runs at once")
    func cancellation() {
        let cancellation = Cancellation()
        let runs = Counter()
        cancellation.whenCancelled { runs.add() }
        #expect(!cancellation.wait(until: .after(seconds: 0.05)), "not cancelled: the deadline ends the wait")
        DispatchQueue.global().asyncAfter(deadline: .now() + 0.1) { cancellation.cancel() }
        let started = Date()
        #expect(cancellation.wait(until: .after(seconds: 10)))
        #expect(Date().timeIntervalSince(started) < 2)
        cancellation.cancel()
        #expect(runs.value == 1)
        cancellation.whenCancelled { runs.add() }
        #expect(runs.value == 2)
        #expect(cancellation.isCancelled)
    }

    @Test("A wait signal wakes a waiter whose condition a notify made true; without one it waits to its deadline")
    func waitSignal() {
        let signal = WaitSignal()
        let flag = Counter()
        #expect(!signal.wait(until: .after(seconds: 0.05)) { flag.value > 0 })
        DispatchQueue.global().asyncAfter(deadline: .now() + 0.1) {
            flag.add()
            signal.notify()
        }
        let started = Date()
        #expect(signal.wait(until: .distantFuture) { flag.value > 0 })
        #expect(Date().timeIntervalSince(started) < 2)
    }

    final class Counter: @unchecked Sendable {
        // @unchecked: guarded by `lock`.
        private let lock = NSLock()
        private var count = 0
        func add() { lock.withLock { count += 1 } }
        var value: Int { lock.withLock { count } }
    }
}
