import FedWire
import Foundation

/// Executes the round engine's actions on one thread, in the order the engine produced them,
/// and lets time pass for the engine.
///
/// Whoever changes the engine queues the actions it returned before it lets go of the engine's
/// lock (``Coordinator/drive(_:)``): the queue's order is the engine's order, whichever thread
/// got the actions. Without this, a worker holding a stale attempt's `attemptFailed` could run it
/// after the ticker had started the retry, and reset the retry's sums.
///
/// Threads: the one ``run(tick:execute:)`` is called on. Actions that do I/O hand it to threads
/// of their own (task senders, pullers, the commit), so the queue keeps moving.
final class RoundDriver: @unchecked Sendable {
    // @unchecked: `queue` and `stopped` are guarded by `condition`.
    private let condition = NSCondition()
    private var queue: [RoundStateMachine.Action] = []
    private var stopped = false
    /// Seconds between the engine's ticks (its deadlines are checked this often).
    let tickInterval: Double

    init(tickInterval: Double = 0.05) { self.tickInterval = tickInterval }

    /// Queues `actions` after every action queued before. O(1) each; never blocks on I/O.
    func post(_ actions: [RoundStateMachine.Action]) {
        guard !actions.isEmpty else { return }
        condition.lock()
        queue.append(contentsOf: actions)
        condition.signal()
        condition.unlock()
    }

    /// Ends ``run(tick:execute:)`` once it has finished the action in hand; queued ones are dropped.
    func stop() {
        condition.lock()
        stopped = true
        condition.signal()
        condition.unlock()
    }

    /// Until ``stop()``: executes the queued actions in order, and calls `tick` every
    /// ``tickInterval`` seconds (between actions, never during one).
    func run(tick: () -> Void, execute: (RoundStateMachine.Action) -> Void) {
        var nextTick = Deadline.after(seconds: tickInterval)
        while true {
            condition.lock()
            while queue.isEmpty && !stopped && !nextTick.hasPassed {
                _ = condition.wait(until: Date(timeIntervalSinceNow: max(0, nextTick.remainingSeconds)))
            }
            if stopped {
                condition.unlock()
                return
            }
            let batch = queue
            queue.removeAll(keepingCapacity: true)
            condition.unlock()
            for action in batch { execute(action) }
            if nextTick.hasPassed {
                tick()
                nextTick = .after(seconds: tickInterval)
            }
        }
    }
}
