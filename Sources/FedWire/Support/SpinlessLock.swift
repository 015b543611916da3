#if canImport(Glibc)
import Glibc
#endif

/// A plain pthread mutex for short critical sections, usable from any thread.
///
/// A class so that it has a stable address; `Synchronization.Mutex` is preferred where a value
/// is guarded, this is for guarding C objects and descriptors.
final class SpinlessLock: @unchecked Sendable {
    // @unchecked: the pthread mutex is itself the synchronisation.
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>

    init() {
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    func lock() { pthread_mutex_lock(mutex) }
    func unlock() { pthread_mutex_unlock(mutex) }

    @inline(__always)
    func withLock<T>(_ body: () throws -> T) rethrows -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }
}
