import FedWire
import Foundation

/// The coordinator's event loop: the one thread that owns the ``RoundStateMachine``.
///
/// Workers never change the engine themselves: they post events (``post(_:)``: a task was sent,
/// keys came, an agent left) or, when they need the engine's answer before they go on, send one
/// and wait (``perform(_:)``: an announcement's verdict, a pulled update's). The driver's thread
/// takes the events in the order they were posted, applies each to the engine and at once
/// executes the actions it returned, in order, before the next event; it ticks the engine every
/// ``tickInterval`` seconds between events. So the engine's order is the execution order: a
/// stale attempt's `attemptFailed` can never run after its retry's `attemptStarted`.
///
/// Threads: the one ``run(tick:execute:)`` is called on. Actions that do I/O hand it to threads
/// of their own (task senders, pullers, the commit), so the queue keeps moving; an action must
/// not ``perform(_:)`` (it would wait for itself), only ``post(_:)``. Other threads read the
/// engine through ``read(_:)``.
final class RoundDriver: @unchecked Sendable {
    // @unchecked: `queue`, `stopped`, `running` and `driverThread` are guarded by `condition`;
    // `engine` is changed only on the driver's thread (or, once it has ended, by `perform`'s
    // caller), under `engineLock`, and read by others under it.
    typealias Change = (inout RoundStateMachine) -> [RoundStateMachine.Action]
    private let condition = NSCondition()
    private var queue: [Change] = []
    private var stopped = false
    /// Between the start of ``run(tick:execute:)`` and its return.
    private var running = false
    private var driverThread: Thread?
    private let engineLock = NSLock()
    private var engine: RoundStateMachine
    /// Seconds between the engine's ticks (its deadlines are checked this often).
    let tickInterval: Double

    init(engine: RoundStateMachine, tickInterval: Double = 0.05) {
        self.engine = engine
        self.tickInterval = tickInterval
    }

    /// Queues an event after every one posted before; the driver applies it to the engine and
    /// executes the actions it returns. O(1); never blocks on I/O. Dropped once stopped.
    func post(_ change: @escaping Change) {
        condition.lock()
        defer { condition.unlock() }
        guard !stopped else { return }
        queue.append(change)
        condition.signal()
    }

    /// Queues an event and waits until the driver has applied it (its actions are executed after
    /// it returns). When the driver is not running (stopped and ended, or never started and
    /// stopped), applies it here, under the engine's lock, and drops its actions. Not from the
    /// driver's own thread.
    func perform<T>(_ change: @escaping (inout RoundStateMachine) -> (T, [RoundStateMachine.Action])) -> T {
        condition.lock()
        precondition(driverThread == nil || Thread.current !== driverThread, "the driver cannot wait for itself")
        if stopped && !running {
            condition.unlock()
            return engineLock.withLock { change(&engine).0 }
        }
        let answer = Answer<T>()
        queue.append { engine in
            let (value, actions) = change(&engine)
            answer.give(value)
            return actions
        }
        condition.signal()
        condition.unlock()
        return answer.take()
    }

    /// Reads the engine as it is between two events. O(1) plus `body`.
    func read<T>(_ body: (RoundStateMachine) -> T) -> T {
        engineLock.withLock { body(engine) }
    }

    /// Ends ``run(tick:execute:)`` once it has finished the events in hand; it applies the events
    /// still queued without executing their actions, so that every ``perform(_:)`` gets its answer.
    func stop() {
        condition.withLock {
            stopped = true
            condition.signal()
        }
    }

    /// Until ``stop()``: applies the queued events in order, executing each one's actions, and
    /// calls `tick` every ``tickInterval`` seconds (between events, never during one).
    func run(tick: @escaping Change, execute: (RoundStateMachine.Action) -> Void) {
        condition.withLock {
            driverThread = Thread.current
            running = true
        }
        var nextTick = Deadline.after(seconds: tickInterval)
        while true {
            condition.lock()
            while queue.isEmpty && !stopped && !nextTick.hasPassed {
                _ = condition.wait(until: Date(timeIntervalSinceNow: max(0, nextTick.remainingSeconds)))
            }
            if stopped {
                // Drain: every queued event is applied, its actions dropped.
                while !queue.isEmpty {
                    let left = queue
                    queue.removeAll()
                    condition.unlock()
                    engineLock.withLock { for change in left { _ = change(&engine) } }
                    condition.lock()
                }
                running = false
                condition.unlock()
                return
            }
            let batch = queue
            queue.removeAll(keepingCapacity: true)
            condition.unlock()
            for change in batch + (nextTick.hasPassed ? [tick] : []) {
                let actions = engineLock.withLock { change(&engine) }
                for action in actions { execute(action) }
            }
            if nextTick.hasPassed { nextTick = .after(seconds: tickInterval) }
        }
    }
}

/// Where a ``RoundDriver/perform(_:)`` caller waits for its event's value.
private final class Answer<T>: @unchecked Sendable {
    // @unchecked: `value` is guarded by `condition`.
    private let condition = NSCondition()
    private var value: T?

    func give(_ value: T) {
        condition.withLock {
            self.value = value
            condition.signal()
        }
    }

    func take() -> T {
        condition.withLock {
            while value == nil { condition.wait() }
            return value!
        }
    }
}
