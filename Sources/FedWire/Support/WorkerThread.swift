import Foundation

/// Starts dedicated threads for blocking socket and OpenSSL work, which must never run on
/// Swift's cooperative thread pool (it has one thread per core: two blocked calls would stall
/// every task on this machine).
enum WorkerThread {
    /// Starts `body` on a new detached thread named `name`.
    static func start(name: String, stackSize: Int = 1 << 20, _ body: @escaping @Sendable () -> Void) {
        let thread = Thread(block: body)
        thread.name = name
        thread.stackSize = stackSize
        thread.start()
    }
}
