import Foundation

/// Runs `parts` pieces of work at once, part 0 on the calling thread and each other part on a
/// thread of its own, and returns when all have finished.
///
/// Dedicated threads, not `DispatchQueue.concurrentPerform`: that one waits until the global
/// dispatch queue has run a continuation for every helper it asked for, so in a process whose
/// dispatch workers are busy with blocking work (a test runner's synchronous tests) a close could
/// stall for seconds. Costs one thread start (≈ 50 µs) per extra part; for work of milliseconds.
public enum ParallelParts {
    public static func run(_ parts: Int, _ body: (_ part: Int) -> Void) {
        guard parts > 1 else {
            if parts == 1 { body(0) }
            return
        }
        withoutActuallyEscaping(body) { body in
            // The threads reach the work through a box that is emptied before this returns: a
            // thread object may outlive the call, the closure must not.
            let work = Work(body)
            let done = DispatchSemaphore(value: 0)
            for part in 1..<parts {
                let thread = Thread { [work] in
                    work.body?(part)
                    done.signal()
                }
                thread.stackSize = 1 << 20
                thread.start()
            }
            body(0)
            for _ in 1..<parts { done.wait() }
            work.body = nil
        }
    }
}

/// The work ``ParallelParts`` hands its threads; emptied once they have all finished.
private final class Work: @unchecked Sendable {
    // @unchecked: `body` is set before the threads start and cleared after they have all signalled.
    var body: ((Int) -> Void)?
    init(_ body: @escaping (Int) -> Void) { self.body = body }
}
