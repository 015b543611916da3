import Foundation

/// Makes rounds durable on a thread of its own while the next round starts: one job at a time,
/// in submission order.
///
/// A job writes the round's checkpoint (fsync, rename) and then its round record, the commit
/// point. The coordinator waits for the previous job before it applies the next round's mean, so
/// at most one round is in flight to disk and its model is never copied (the job shares the
/// model's storage, which nobody writes until the job is done).
final class CommitWriter: @unchecked Sendable {
    // @unchecked: `busy` and `pending` are guarded by `condition`.
    private let condition = NSCondition()
    private var busy = false
    /// The job submitted and not yet started. Held here rather than captured by the thread, so
    /// that the job (and the model it shares) is released before the writer reports idle: a
    /// model still shared at the next close would be copied there.
    private var pending: (@Sendable () -> Void)?

    /// Whether a job is submitted and not finished.
    var isBusy: Bool { condition.withLock { busy } }

    /// Blocks until the job in flight (if any) has finished.
    func waitUntilIdle() {
        condition.lock()
        while busy { condition.wait() }
        condition.unlock()
    }

    /// Runs `job` on a new thread once the previous job has finished.
    func submit(_ job: @escaping @Sendable () -> Void) {
        condition.lock()
        while busy { condition.wait() }
        busy = true
        pending = job
        condition.unlock()
        let thread = Thread { [self] in
            do {
                let job = condition.withLock { pending.take() }
                job?()
            }
            condition.lock()
            busy = false
            condition.broadcast()
            condition.unlock()
        }
        thread.name = "fedcoord-commit"
        thread.start()
    }
}
