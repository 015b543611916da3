import FedCore
import FedHashing
import FedWire
import Foundation

/// The coordinator's state folder: versioned model checkpoints (safetensors), the server
/// optimizer's state, and the round log.
///
/// Commit protocol for round N: write `checkpoints/model-N.safetensors` (and the optimizer's
/// state) atomically (temporary file, fsync, rename, fsync of the folder), then append the
/// round record to the log (fsynced): the record is the commit point. A coordinator killed at
/// any instant restarts from the last round record whose checkpoint exists and matches its
/// hash; a checkpoint without a record is an uncommitted leftover and is ignored.
///
/// The oldest checkpoint pruned is not deleted but kept as `.spare-model.safetensors` (and
/// `.spare-optimizer.safetensors`), and the next checkpoint is written over it: overwriting pages
/// the kernel already holds costs a fraction of allocating a model's worth of new ones every round
/// (on a virtual machine that hands freed memory back to its host, up to ten times less).
public final class CheckpointStore {
    public let directory: String
    public var checkpointDirectory: String { directory + "/checkpoints" }
    public var logPath: String { directory + "/rounds.jsonl" }
    /// Checkpoints kept on disk (older ones are deleted after each commit).
    public let keep: Int

    public init(directory: String, keep: Int = 5) throws {
        self.directory = directory
        self.keep = max(1, keep)
        for folder in [directory, directory + "/checkpoints"] {
            do {
                try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
            } catch {
                throw StateFolderError(.unwritable, "cannot create the state folder '\(folder)' (state_dir): \(Self.systemReason(error)); "
                    + "set state_dir to a folder this user can create and write")
            }
        }
    }

    /// The operating system's reason inside a Foundation file error ("Permission denied", "No
    /// space left on device"), not Cocoa's domain and code.
    static func systemReason(_ error: any Error) -> String {
        let cause = (error as NSError).userInfo[NSUnderlyingErrorKey] as? any Error ?? error
        if let posix = cause as? POSIXError { return String(cString: strerror(posix.code.rawValue)) }
        return (error as NSError).localizedDescription
    }

    public func modelPath(version: UInt64) -> String { checkpointDirectory + String(format: "/model-%06llu.safetensors", version) }
    public func optimizerPath(version: UInt64) -> String { checkpointDirectory + String(format: "/optimizer-%06llu.safetensors", version) }
    /// A pruned checkpoint kept for the next one to be written over (its name has no version).
    var spareModelPath: String { checkpointDirectory + "/.spare-model.safetensors" }
    var spareOptimizerPath: String { checkpointDirectory + "/.spare-optimizer.safetensors" }

    /// The model hash of the wire and the log (``ModelDigest``), hex.
    public static func modelHash(_ model: ModelParameters) -> String { modelDigest(model).hexString }

    /// The model hash (``ModelDigest``: SHA-256 over its tensors' SHA-256s). One pass over the model.
    public static func modelDigest(_ model: ModelParameters) -> [UInt8] { ModelDigest.combine(tensorDigests(model)) }

    /// Each tensor's SHA-256, in layout order.
    public static func tensorDigests(_ model: ModelParameters) -> [[UInt8]] {
        model.values.withUnsafeBufferPointer { values in
            ModelDigest.tensorDigests(values, ranges: model.layout.ranges)
        }
    }

    /// Writes a model checkpoint atomically (its hash is ``modelHash(_:)``).
    ///
    /// - Parameter beforeRename: runs once the temporary file is complete and fsynced, before it
    ///   takes the checkpoint's name (a crash drill's step).
    public func writeModel(
        _ model: ModelParameters, version: UInt64, metadata: [String: String] = [:], beforeRename: () -> Void = {}
    ) throws {
        let header = try SafeTensors.header(for: model.layout, metadata: metadata)
        try header.withUnsafeBytes { head in
            try model.values.withUnsafeBytes { values in
                try Self.writeAtomically(segments: [head, values], to: modelPath(version: version), overwriting: spareModelPath,
                                         beforeRename: beforeRename)
            }
        }
    }

    /// Writes the optimizer's moments (if it has any) for `version`.
    /// Written from the moments' own storage (no copy of them is made).
    public func writeOptimizer(_ optimizer: ServerOptimizer, layout: ModelLayout, version: UInt64) throws {
        var tensors: [TensorSpec] = []
        if !optimizer.firstMoment.isEmpty { tensors.append(TensorSpec(name: "first_moment", shape: [optimizer.firstMoment.count])) }
        if !optimizer.secondMoment.isEmpty { tensors.append(TensorSpec(name: "second_moment", shape: [optimizer.secondMoment.count])) }
        guard !tensors.isEmpty else { return }
        let header = try SafeTensors.header(for: try ModelLayout(tensors), metadata: ["optimizer": optimizer.settings.kind.rawValue])
        try header.withUnsafeBytes { head in
            try optimizer.firstMoment.withUnsafeBytes { first in
                try optimizer.secondMoment.withUnsafeBytes { second in
                    try Self.writeAtomically(segments: [head, first, second], to: optimizerPath(version: version), overwriting: spareOptimizerPath)
                }
            }
        }
    }

    public func readModel(version: UInt64) throws -> ModelParameters {
        guard let data = FileManager.default.contents(atPath: modelPath(version: version)) else {
            throw ModelError("checkpoint \(modelPath(version: version)) is missing")
        }
        return try SafeTensors.decode([UInt8](data)).model
    }

    /// The metadata key of a checkpoint that holds how many records the round log had when it
    /// was written (a lower bound): a log with fewer has lost records from its end.
    public static let logRecordsKey = "log_records"

    /// What checkpoint `version` says of the log's length when it was written; nil if it says nothing.
    public func logRecordsWhenWritten(version: UInt64) throws -> UInt64? {
        guard let data = FileManager.default.contents(atPath: modelPath(version: version)) else { return nil }
        return try SafeTensors.decode([UInt8](data)).metadata[Self.logRecordsKey].flatMap { UInt64($0) }
    }

    public func readOptimizer(settings: ServerOptimizer.Settings, version: UInt64) -> ServerOptimizer {
        guard let data = FileManager.default.contents(atPath: optimizerPath(version: version)),
            let decoded = try? SafeTensors.decode([UInt8](data))
        else { return ServerOptimizer(settings: settings) }
        return ServerOptimizer(
            settings: settings, firstMoment: Array(decoded.model.tensor(named: "first_moment") ?? []),
            secondMoment: Array(decoded.model.tensor(named: "second_moment") ?? []))
    }

    /// The coordinator-start counter (`state_dir/epoch`), which only rises: outside the round log,
    /// so that a log cut by `fedcoord state repair` or restored from a backup cannot lower it.
    public var epochPath: String { directory + "/epoch" }

    /// Counts one more start: one above both the stored counter and `atLeast`, written durably
    /// before it is returned. Secure round ids start with it.
    ///
    /// - Throws: ``ModelError`` when it cannot be written, or past 2^20 starts (the ids' room).
    public func nextEpoch(atLeast floor: UInt64) throws -> UInt64 {
        let stored = (try? String(contentsOfFile: epochPath, encoding: .utf8)).flatMap { UInt64($0.trimmingCharacters(in: .whitespacesAndNewlines)) } ?? 0
        let next = max(stored, floor) + 1
        guard next < 1 << 20 else {
            throw ModelError("\(epochPath) counts \(next) coordinator starts, more than secure round ids hold (2^20); start a new state_dir")
        }
        try Self.writeAtomically(Array("\(next)\n".utf8), to: epochPath)
        return next
    }

    /// The versions of the model checkpoints in the folder, ascending.
    public func modelVersions() -> [UInt64] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: checkpointDirectory)) ?? []
        return names.compactMap { name -> UInt64? in
            guard name.hasPrefix("model-"), name.hasSuffix(".safetensors") else { return nil }
            return UInt64(name.dropFirst("model-".count).dropLast(".safetensors".count))
        }.sorted()
    }

    /// Deletes checkpoints older than the newest `keep` (the first one pruned of each kind
    /// becomes the spare) and temporary files of writes that never finished. Never touches a
    /// checkpoint newer than `committed`: one past it is the leftover of a commit cut short,
    /// written over when that round commits; more are for an operator to look at.
    public func prune(committed: UInt64) {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: checkpointDirectory) else { return }
        for name in names {
            let path = checkpointDirectory + "/" + name
            if name.hasSuffix(".tmp") {
                try? FileManager.default.removeItem(atPath: path)
                continue
            }
            guard let version = UInt64(name.filter(\.isNumber)), version + UInt64(keep) <= committed else { continue }
            if version == 0 && committed < UInt64(keep) { continue }
            let spare = name.hasPrefix("model-") ? spareModelPath : name.hasPrefix("optimizer-") ? spareOptimizerPath : nil
            if let spare, !FileManager.default.fileExists(atPath: spare), rename(path, spare) == 0 { continue }
            try? FileManager.default.removeItem(atPath: path)
        }
    }

    /// Temporary file, fsync, rename, fsync of the folder.
    public static func writeAtomically(_ bytes: [UInt8], to path: String) throws {
        try bytes.withUnsafeBytes { try writeAtomically(segments: [$0], to: path) }
    }

    /// Writes the segments back to back: temporary file, fsync, rename, fsync of the folder.
    ///
    /// - Parameter spare: a file to write over instead of creating one (it is renamed to the
    ///   temporary name first, so a crash never leaves it looking like a checkpoint).
    public static func writeAtomically(
        segments: [UnsafeRawBufferPointer], to path: String, overwriting spare: String? = nil, beforeRename: () -> Void = {}
    ) throws {
        let temporary = path + ".tmp"
        let reused = spare.map { rename($0, temporary) == 0 } ?? false
        let fd = open(temporary, O_WRONLY | O_CREAT | O_CLOEXEC | (reused ? 0 : O_TRUNC), 0o644)
        guard fd >= 0 else { throw ModelError("cannot create \(temporary): \(String(cString: strerror(errno)))") }
        for bytes in segments {
            var offset = 0
            while offset < bytes.count {
                let n = write(fd, bytes.baseAddress! + offset, bytes.count - offset)
                if n < 0 {
                    if errno == EINTR { continue }
                    let message = String(cString: strerror(errno))
                    close(fd)
                    unlink(temporary)
                    throw ModelError("cannot write \(path): \(message)")
                }
                offset += n
            }
        }
        let length = segments.reduce(0) { $0 + $1.count }
        guard !reused || ftruncate(fd, off_t(length)) == 0 else {
            let message = String(cString: strerror(errno))
            close(fd)
            unlink(temporary)
            throw ModelError("cannot write \(path): \(message)")
        }
        guard fsync(fd) == 0 else {
            close(fd)
            throw ModelError("cannot fsync \(temporary): \(String(cString: strerror(errno)))")
        }
        close(fd)
        beforeRename()
        guard rename(temporary, path) == 0 else { throw ModelError("cannot rename \(temporary): \(String(cString: strerror(errno)))") }
        let folder = (path as NSString).deletingLastPathComponent
        let dirfd = open(folder.isEmpty ? "." : folder, O_RDONLY | O_DIRECTORY)
        if dirfd >= 0 {
            fsync(dirfd)
            close(dirfd)
        }
    }
}
