import FedWire
import Foundation

/// A task's cancellation, which a trainer can check, wait on, or be called back by.
///
/// Set once (``cancel()``) by the agent when the coordinator cancels the task, a newer task
/// arrives or the agent stops; never reset.
public final class Cancellation: @unchecked Sendable {
    // @unchecked: `cancelled` and `handlers` are guarded by `lock`.
    private let lock = NSLock()
    private var cancelled = false
    private var handlers: [@Sendable () -> Void] = []
    private let changed = WaitSignal()

    public init() {}

    public var isCancelled: Bool { lock.withLock { cancelled } }

    /// Cancels: runs the handlers (on this thread), then wakes ``wait(until:)``; once.
    public func cancel() {
        let run: [@Sendable () -> Void]? = lock.withLock {
            if cancelled { return nil }
            cancelled = true
            defer { handlers = [] }
            return handlers
        }
        guard let run else { return }
        for handler in run { handler() }
        changed.notify()
    }

    /// Runs `handler` on cancellation (at once if already cancelled).
    public func whenCancelled(_ handler: @escaping @Sendable () -> Void) {
        let already: Bool = lock.withLock {
            if !cancelled { handlers.append(handler) }
            return cancelled
        }
        if already { handler() }
    }

    /// Blocks until cancelled or `deadline`; returns whether it was cancelled.
    @discardableResult
    public func wait(until deadline: Deadline) -> Bool {
        changed.wait(until: deadline) { isCancelled }
    }
}
