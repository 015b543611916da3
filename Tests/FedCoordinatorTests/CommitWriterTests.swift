import Foundation
import Testing

@testable import FedCoordinator

@Suite("Commit writer")
struct CommitWriterTests {
    /// Stands for the model a job writes; notes whether the writer still counted as busy when
    /// the job let go of it.
    final class Payload: @unchecked Sendable {
        let writer: CommitWriter
        let releasedWhileBusy: @Sendable (Bool) -> Void
        init(writer: CommitWriter, releasedWhileBusy: @escaping @Sendable (Bool) -> Void) {
            self.writer = writer
            self.releasedWhileBusy = releasedWhileBusy
        }
        deinit { releasedWhileBusy(writer.isBusy) }
    }

    @Test("Jobs run in order, and each job's captures are released before the writer reports idle")
    func releasesBeforeIdle() {
        let writer = CommitWriter()
        let lock = NSLock()
        nonisolated(unsafe) var ran: [Int] = []
        nonisolated(unsafe) var releasedWhileBusy: [Bool] = []
        for round in 0..<10 {
            // The job holds the only reference (a reference kept here could outlive the job on a
            // slow machine and be released by this thread, after the writer went idle).
            let note: @Sendable (Bool) -> Void = { busy in lock.withLock { releasedWhileBusy.append(busy) } }
            writer.submit { [payload = Payload(writer: writer, releasedWhileBusy: note)] in
                _ = payload
                lock.withLock { ran.append(round) }
            }
            writer.waitUntilIdle()
        }
        #expect(lock.withLock { ran } == Array(0..<10))
        // A model still shared once the writer is idle would be copied by the next close's step.
        #expect(lock.withLock { releasedWhileBusy } == Array(repeating: true, count: 10))
    }
}
