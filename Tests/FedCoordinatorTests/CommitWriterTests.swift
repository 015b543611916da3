import Foundation
import Testing

@testable import FedCoordinator

@Suite("Commit writer")
struct CommitWriterTests {
    /// Stands for the model a job writes; counts its releases.
    final class Payload: @unchecked Sendable {
        let released: @Sendable () -> Void
        init(released: @escaping @Sendable () -> Void) { self.released = released }
        deinit { released() }
    }

    @Test("Jobs run in order, and each job's captures are released by the time the writer is idle again")
    func releasesBeforeIdle() {
        let writer = CommitWriter()
        let lock = NSLock()
        nonisolated(unsafe) var ran: [Int] = []
        nonisolated(unsafe) var released = 0
        var releasedWhenIdle: [Int] = []
        for round in 0..<10 {
            let note: @Sendable () -> Void = { lock.withLock { released += 1 } }
            writer.submit { [payload = Payload(released: note)] in
                _ = payload
                lock.withLock { ran.append(round) }
            }
            writer.waitUntilIdle()
            // A model still shared once the writer is idle would be copied by the next close's step.
            releasedWhenIdle.append(lock.withLock { released })
        }
        #expect(lock.withLock { ran } == Array(0..<10))
        #expect(releasedWhenIdle == Array(1...10))
    }
}
