import Foundation

/// Lets threads wait for a condition on state they do not own, until a deadline, without
/// polling: whoever changes that state calls ``notify()``, and each waiter re-checks its
/// condition then (and at its deadline).
///
/// The condition is checked under the signal's own lock, and ``notify()`` takes that lock, so a
/// change made before `notify()` is never missed.
public final class WaitSignal: @unchecked Sendable {
    // @unchecked: `generation` is guarded by `condition`.
    private let condition = NSCondition()
    private var generation: UInt64 = 0

    public init() {}

    /// Wakes every waiter to re-check its condition. O(waiters).
    public func notify() {
        condition.lock()
        generation &+= 1
        condition.broadcast()
        condition.unlock()
    }

    /// Blocks until `done()` holds or `deadline` passes; returns whether `done()` held.
    ///
    /// `done` is called with the signal's lock held: it may take other locks, but must not call
    /// back into this signal.
    @discardableResult
    public func wait(until deadline: Deadline, for done: () -> Bool) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        while !done() {
            if !condition.wait(until: deadline) { return false }
        }
        return true
    }
}

extension NSCondition {
    /// Waits, with the lock held, until signalled or `deadline`; false (without waiting) once
    /// the deadline has passed. Callers re-check their condition either way.
    func wait(until deadline: Deadline) -> Bool {
        if deadline.isDistantFuture {
            wait()
            return true
        }
        let remaining = deadline.remainingSeconds
        if remaining <= 0 { return false }
        _ = wait(until: Date(timeIntervalSinceNow: remaining))
        return true
    }
}
