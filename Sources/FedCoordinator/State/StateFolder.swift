import FedCore
import Foundation

/// Why a state folder cannot be served as it is, and what to do about it.
public struct StateFolderError: Error, CustomStringConvertible, Sendable {
    public struct Code: Hashable, Sendable {
        public let name: String
        public static let logMissing = Code(name: "log-missing")
        public static let logBroken = Code(name: "log-broken")
        public static let logBehindCheckpoints = Code(name: "log-behind-checkpoints")
        public static let checkpointMismatch = Code(name: "checkpoint-mismatch")
        public static let nothingToRepair = Code(name: "nothing-to-repair")
        public static let witnessUnreadable = Code(name: "witness-unreadable")
        /// The state folder cannot be created or written.
        public static let unwritable = Code(name: "unwritable")
    }
    public var code: Code
    public var message: String
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }
    public var description: String { message }
}

/// Consistency of a state folder's round log and checkpoints: the check `serve` makes before it
/// uses them, and `fedcoord state repair`. Nothing here deletes a checkpoint or a record: what a
/// repair cuts or sets aside is moved beside the originals.
public enum StateFolder {
    /// Refuses a log that cannot account for the checkpoints beside it: missing or empty while
    /// trained checkpoints exist, or ending more than one round before the newest checkpoint
    /// (one past it is a commit cut short by a crash, and is fine).
    static func check(store: CheckpointStore, logRecords: UInt64, history: LogHistory) throws {
        guard let newest = store.modelVersions().last, newest > 0 else { return }
        let folder = store.directory
        if logRecords == 0 {
            throw StateFolderError(.logMissing, "the state folder '\(folder)' holds trained checkpoints (up to round \(newest)) but its round "
                + "log \(store.logPath) is missing or empty, so the federation's history is gone; nothing was changed. To resume from "
                + "checkpoint \(newest): `fedcoord state repair --state \(folder)` (records that the history before it is lost); to "
                + "start a new federation: `fedcoord state repair --state \(folder) --new` (sets the old state aside)")
        }
        let resume = history.resumeVersion ?? 0
        // One past the last commit is a commit cut short, unless the log has fewer records than
        // it had when that checkpoint was written: then records were removed from its end.
        let shortened = newest == resume + 1 && (try? store.logRecordsWhenWritten(version: newest)).flatMap { $0 }.map { logRecords < $0 } == true
        if newest > resume + 1 || shortened {
            throw StateFolderError(.logBehindCheckpoints, "the round log \(store.logPath) ends at round \(resume) but the checkpoints go up to "
                + "round \(newest): records were removed from the end of the log; nothing was changed. Restore the log from a backup, "
                + "or run `fedcoord state repair --state \(folder)` to resume from the last checkpoint the log vouches for (round "
                + "\(resume)), setting the newer checkpoints aside")
        }
    }

    /// What a repair did, line by line (also in its `state_repaired` record).
    public struct Repair: Sendable {
        public var actions: [String]
        /// The model version the folder resumes from now (nil after `startOver`).
        public var resumeVersion: UInt64?
    }

    /// Makes `directory` consistent again. Without `startOver`: keeps the log's verified prefix
    /// up to the last committed round whose checkpoint exists and matches its hash (or, without
    /// one, adopts the newest readable checkpoint), moves the lines after it to
    /// `rounds.cut-TIME.jsonl` and newer checkpoints to `checkpoints/set-aside-TIME/`, and appends
    /// a `state_repaired` record saying so. With `startOver`: moves the whole state into
    /// `archive-TIME/`, so that the next `serve` starts a new federation.
    public static func repair(directory: String, startOver: Bool) throws -> Repair {
        let store = try CheckpointStore(directory: directory)
        let stamp = RoundLog.timestamp().replacingOccurrences(of: ":", with: "-")
        let manager = FileManager.default
        if startOver {
            let archive = directory + "/archive-" + stamp
            try manager.createDirectory(atPath: archive, withIntermediateDirectories: true)
            var actions: [String] = []
            for name in ["rounds.jsonl", "checkpoints", "spool", "schema.json"] where manager.fileExists(atPath: directory + "/" + name) {
                try manager.moveItem(atPath: directory + "/" + name, toPath: archive + "/" + name)
                actions.append("moved \(name) to \(archive)/\(name)")
            }
            return Repair(actions: actions, resumeVersion: nil)
        }
        // The verified prefix, and the records that name a model to resume from.
        var points: [(seq: UInt64, version: UInt64, sha256: String?)] = []
        var verifiedCount: UInt64 = 0
        var problem: String?
        let logExists = manager.fileExists(atPath: store.logPath)
        if logExists {
            do {
                let scan = try RoundLog.scan(path: store.logPath) { record in
                    switch record.event {
                    case .round(let round): points.append((record.seq, round.round, round.modelSHA256))
                    case .stateRepaired(let repair): if let version = repair.modelVersion { points.append((record.seq, version, repair.modelSHA256)) }
                    default: break
                    }
                }
                verifiedCount = scan.count
                if scan.incompleteTail { problem = "its last line was incomplete" }
            } catch let error as RoundLogError {
                verifiedCount = UInt64(max(0, error.line - 1))
                problem = "line \(error.line) did not verify: \(error.message)"
                points.removeAll { $0.seq > verifiedCount }
            }
        }
        let versions = store.modelVersions()
        let good = points.last { point in
            guard versions.contains(point.version), let model = try? store.readModel(version: point.version) else { return false }
            return CheckpointStore.modelHash(model) == point.sha256
        }
        var keptCount = verifiedCount
        var adopted: (version: UInt64, sha256: String)?
        if let good {
            if points.contains(where: { $0.seq > good.seq }) {
                keptCount = good.seq
                problem = problem ?? "rounds after \(good.version) have no checkpoint that matches their record"
            }
        } else {
            if let first = points.first {
                keptCount = first.seq - 1
                problem = problem ?? "no committed round has a checkpoint that matches its record"
            }
            if let newest = versions.last(where: { $0 > 0 && (try? store.readModel(version: $0)) != nil }) {
                adopted = (newest, CheckpointStore.modelHash(try store.readModel(version: newest)))
            }
        }
        var actions: [String] = []
        let lineEnds = logExists ? try lineEndOffsets(path: store.logPath) : []
        let keptBytes = keptCount == 0 ? 0 : lineEnds[Int(keptCount) - 1]
        let fileBytes = logExists ? ((try? manager.attributesOfItem(atPath: store.logPath)[.size] as? UInt64) ?? 0) : 0
        if keptBytes < fileBytes {
            let cutPath = directory + "/rounds.cut-\(stamp).jsonl"
            let data = try Data(contentsOf: URL(fileURLWithPath: store.logPath))
            try data.suffix(from: Int(keptBytes)).write(to: URL(fileURLWithPath: cutPath))
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: store.logPath))
            try handle.truncate(atOffset: keptBytes)
            try handle.synchronize()
            try handle.close()
            actions.append("cut the round log after record \(keptCount) (\(problem ?? "")); the \(fileBytes - keptBytes) bytes cut are in \(cutPath)")
        }
        let resumeVersion = good?.version ?? adopted?.version ?? 0
        let newer = versions.filter { $0 > resumeVersion }
        if !newer.isEmpty {
            let aside = store.checkpointDirectory + "/set-aside-" + stamp
            try manager.createDirectory(atPath: aside, withIntermediateDirectories: true)
            for version in newer {
                for path in [store.modelPath(version: version), store.optimizerPath(version: version)] where manager.fileExists(atPath: path) {
                    try manager.moveItem(atPath: path, toPath: aside + "/" + (path as NSString).lastPathComponent)
                }
            }
            actions.append("set aside checkpoints \(newer.map(String.init).joined(separator: ", ")) (newer than round \(resumeVersion)) in \(aside)")
        }
        if !logExists { actions.append("the round log was missing: a new one starts here") }
        if let adopted { actions.append("no round record vouches for a checkpoint: resuming from checkpoint \(adopted.version); the history before it is lost") }
        guard !actions.isEmpty else {
            throw StateFolderError(.nothingToRepair, "the state folder '\(directory)' is consistent: the round log verifies and accounts for every "
                + "checkpoint; nothing was changed")
        }
        let log = try RoundLog(path: store.logPath)
        try log.append(RoundLogRecord(.stateRepaired(.init(
            reason: "fedcoord state repair", repaired: actions, modelVersion: adopted?.version, modelSHA256: adopted?.sha256))))
        return Repair(actions: actions, resumeVersion: resumeVersion)
    }

    /// The byte offset just past each line of the file.
    private static func lineEndOffsets(path: String) throws -> [UInt64] {
        let data = try Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped)
        var ends: [UInt64] = []
        for (index, byte) in data.enumerated() where byte == 0x0A { ends.append(UInt64(index + 1)) }
        return ends
    }

}
