import Foundation

/// SHA-256 on a helper thread, so that a sender hashes chunk *k* while it encrypts and writes
/// the same chunk: the sender's time per chunk becomes max(hash, send) instead of their sum.
///
/// Usage per chunk: ``submit(_:)``, send the chunk, ``wait()``; the bytes must stay valid and
/// unchanged until ``wait()`` returns. ``finalize()`` ends the thread.
final class BackgroundHasher: @unchecked Sendable {
    // @unchecked: `pending` and `stopping` are guarded by `condition`; the hasher is only touched
    // by the worker between submit and wait.
    private let hasher = SHA256Hasher()
    private let condition = NSCondition()
    private var pending: UnsafeRawBufferPointer?
    private var busy = false
    private var stopping = false

    init() {
        let thread = Thread { [self] in run() }
        thread.name = "fedwire-hash"
        thread.stackSize = 256 << 10
        thread.start()
    }

    private func run() {
        while true {
            condition.lock()
            while pending == nil && !stopping { condition.wait() }
            guard let bytes = pending else {
                condition.unlock()
                return
            }
            condition.unlock()
            hasher.update(bytes)
            condition.lock()
            pending = nil
            busy = false
            condition.broadcast()
            condition.unlock()
        }
    }

    func submit(_ bytes: UnsafeRawBufferPointer) {
        condition.lock()
        precondition(!busy, "submit before the previous chunk was waited for")
        pending = bytes
        busy = true
        condition.broadcast()
        condition.unlock()
    }

    func wait() {
        condition.lock()
        while busy { condition.wait() }
        condition.unlock()
    }

    /// Waits for the last chunk, stops the thread and returns the digest.
    func finalize() -> [UInt8] {
        wait()
        condition.lock()
        stopping = true
        condition.broadcast()
        condition.unlock()
        return hasher.finalize()
    }
}
