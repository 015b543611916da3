import Foundation

/// A pthread reader-writer lock: broadcasts read the global model concurrently; aggregation
/// and commits write it.
final class ReadWriteLock: @unchecked Sendable {
    // @unchecked: the rwlock is the synchronisation.
    private let lock: UnsafeMutablePointer<pthread_rwlock_t>

    init() {
        lock = .allocate(capacity: 1)
        lock.initialize(to: pthread_rwlock_t())
        pthread_rwlock_init(lock, nil)
    }

    deinit {
        pthread_rwlock_destroy(lock)
        lock.deallocate()
    }

    func withReadLock<T>(_ body: () throws -> T) rethrows -> T {
        pthread_rwlock_rdlock(lock)
        defer { pthread_rwlock_unlock(lock) }
        return try body()
    }

    func withWriteLock<T>(_ body: () throws -> T) rethrows -> T {
        pthread_rwlock_wrlock(lock)
        defer { pthread_rwlock_unlock(lock) }
        return try body()
    }
}

/// A value shared by threads, only touched under its lock.
final class Locked<Value>: @unchecked Sendable {
    // @unchecked: `value` is guarded by `lock`.
    private let lock = NSLock()
    private var value: Value

    init(_ value: Value) { self.value = value }

    func withLock<T>(_ body: (inout Value) throws -> T) rethrows -> T {
        try lock.withLock { try body(&value) }
    }
}

/// Runs `body` for every agent at once, each on its own thread (blocking calls never run on the
/// cooperative pool), and collects what each returned or threw.
func fanOut<Result>(to agents: [String], _ body: @escaping @Sendable (String) throws -> Result) -> [String: Swift.Result<Result, any Error>] {
    let answers = Locked<[String: Swift.Result<Result, any Error>]>([:])
    let group = DispatchGroup()
    for agent in agents {
        group.enter()
        Thread {
            defer { group.leave() }
            let outcome = Swift.Result { try body(agent) }
            answers.withLock { $0[agent] = outcome }
        }.start()
    }
    group.wait()
    return answers.withLock { $0 }
}
