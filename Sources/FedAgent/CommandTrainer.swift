import FedCore
import FedLearn
import FedProtocol
import FedWire
import Foundation

/// Bring your own trainer: a site trains with its own code. Per task the agent writes the global
/// weights (`global.safetensors`) and the task (`task.json`) into a work folder, runs the
/// configured command with a timeout, and reads back the updated weights (safetensors) and a
/// small JSON result (`{"example_count": 120, "loss": 0.31}`). The paths reach the command in
/// environment variables: `FEDCOORD_GLOBAL_WEIGHTS`, `FEDCOORD_TASK`, `FEDCOORD_OUTPUT_WEIGHTS`,
/// `FEDCOORD_RESULT`.
///
/// A command that fails, hangs, or returns wrong names, shapes or non-finite values is an error
/// naming what went wrong; the agent reports the failure and stays in the federation. The data
/// check, statistics and evaluation use the site's CSV as ``SiteTrainer`` does.
public final class CommandTrainer: LocalTrainer, @unchecked Sendable {
    // @unchecked: immutable after init; SiteTrainer is thread-safe.
    public let command: [String]
    public let timeoutSeconds: Double
    public let workDirectory: String
    private let site: SiteTrainer

    public init(command: [String], timeoutSeconds: Double, workDirectory: String, files: SiteTrainer.DataFiles) {
        self.command = command
        self.timeoutSeconds = timeoutSeconds
        self.workDirectory = workDirectory
        site = SiteTrainer(files: files)
    }

    public func prepare(schema: ModelSchema) throws -> DataSchemaSummary { try site.prepare(schema: schema) }
    public func statistics() throws -> FeatureStatistics { try site.statistics() }
    public func evaluate(request: EvaluationRequest, model: ModelParameters) throws -> EvaluationMetrics {
        try site.evaluate(request: request, model: model)
    }

    /// The command's failure, for the agent's log and the round log.
    public struct Failure: Error, CustomStringConvertible {
        public var message: String
        public var description: String { message }
    }

    public func train(task: TrainTask, global: ModelParameters, cancellation: Cancellation) throws -> TrainingResult {
        let folder = workDirectory + "/round-\(task.roundID)"
        try? FileManager.default.removeItem(atPath: folder)
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let paths = (global: folder + "/global.safetensors", task: folder + "/task.json", output: folder + "/updated.safetensors",
                     result: folder + "/result.json")
        try Data(SafeTensors.encode(global, metadata: ["round": "\(task.roundID)"])).write(to: URL(fileURLWithPath: paths.global))
        let description: [String: Any] = [
            "round": task.roundID, "model_version": task.modelVersion, "local_epochs": task.localEpochs, "batch_size": task.batchSize,
            "learning_rate": task.learningRate, "proximal_mu": task.proximalMu, "local_optimizer": task.localOptimizer,
            "momentum": task.momentum, "l2": task.l2, "seed": task.seed, "feature_means": task.featureMeans,
            "feature_scales": task.featureScales, "data_csv": site.files.csv,
            "tensors": global.layout.tensors.map { ["name": $0.name, "shape": $0.shape] },
        ]
        try JSONSerialization.data(withJSONObject: description, options: [.sortedKeys]).write(to: URL(fileURLWithPath: paths.task))

        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = command
        process.currentDirectoryURL = URL(fileURLWithPath: folder)
        var environment = ProcessInfo.processInfo.environment
        environment["FEDCOORD_GLOBAL_WEIGHTS"] = paths.global
        environment["FEDCOORD_TASK"] = paths.task
        environment["FEDCOORD_OUTPUT_WEIGHTS"] = paths.output
        environment["FEDCOORD_RESULT"] = paths.result
        process.environment = environment
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        let stderrTail = StderrTail(errors.fileHandleForReading)
        do { try process.run() } catch {
            throw Failure(message: "cannot start the training command \(command): \(error.localizedDescription)")
        }
        // Cancellation and the timeout each stop the command: SIGTERM, then SIGKILL 2 s later.
        let stopper = CommandStopper(process)
        cancellation.whenCancelled { stopper.stop() }
        let timeout = DispatchWorkItem { stopper.stop(timedOut: true) }
        DispatchQueue.global().asyncAfter(deadline: .now() + timeoutSeconds, execute: timeout)
        process.waitUntilExit()
        timeout.cancel()
        stopper.exited()
        if cancellation.isCancelled { throw TrainingCancelled() }
        if stopper.timedOut {
            throw Failure(message: "the training command did not finish within \(timeoutSeconds) s (trainer.timeout_seconds); it was stopped")
        }
        let tail = stderrTail.text()
        guard process.terminationReason == .exit, process.terminationStatus == 0 else {
            throw Failure(message: "the training command exited with status \(process.terminationStatus)"
                + (tail.isEmpty ? "" : "; its last error output: \(tail)"))
        }
        return try readBack(paths.output, paths.result, global: global)
    }

    /// Reads the command's output and checks it against the global model.
    func readBack(_ weightsPath: String, _ resultPath: String, global: ModelParameters) throws -> TrainingResult {
        guard let bytes = FileManager.default.contents(atPath: weightsPath) else {
            throw Failure(message: "the training command wrote no updated weights at $FEDCOORD_OUTPUT_WEIGHTS")
        }
        let decoded: SafeTensors.Decoded
        do { decoded = try SafeTensors.decode([UInt8](bytes)) } catch {
            throw Failure(message: "the updated weights are not a valid float32 safetensors file: \(error)")
        }
        let layout = global.layout
        let returned = Dictionary(uniqueKeysWithValues: decoded.model.layout.tensors.enumerated().map { ($1.name, ($1, $0)) })
        let expected = Set(layout.tensors.map(\.name)), got = Set(returned.keys)
        guard expected == got else {
            throw Failure(message: "the updated weights hold tensors \(got.sorted()); the model has \(expected.sorted())")
        }
        var delta = [Float](repeating: 0, count: layout.parameterCount)
        for (index, spec) in layout.tensors.enumerated() {
            let (theirs, position) = returned[spec.name]!
            guard theirs.shape == spec.shape else {
                throw Failure(message: "tensor '\(spec.name)' came back with shape \(theirs.shape); the model's is \(spec.shape)")
            }
            let source = decoded.model.layout.range(of: position), target = layout.range(of: index)
            for (s, t) in zip(source, target) {
                let value = decoded.model.values[s]
                guard value.isFinite else {
                    throw Failure(message: "tensor '\(spec.name)' came back with a non-finite value (NaN or infinity) at element \(t - target.lowerBound)")
                }
                delta[t] = value - global.values[t]
            }
        }
        guard let data = FileManager.default.contents(atPath: resultPath),
              let result = try? JSONSerialization.jsonObject(with: data) as? [String: Any]
        else {
            throw Failure(message: "the training command wrote no JSON result at $FEDCOORD_RESULT ({\"example_count\": N, \"loss\": x})")
        }
        guard let count = (result["example_count"] as? NSNumber)?.int64Value, count > 0 else {
            throw Failure(message: "the JSON result needs a positive integer \"example_count\"")
        }
        let loss = (result["loss"] as? NSNumber)?.doubleValue ?? 0
        return TrainingResult(delta: delta, exampleCount: UInt64(count), loss: loss.isFinite ? loss : 0)
    }
}

/// Keeps the last few hundred bytes a child writes to standard error, for the failure message.
final class StderrTail: @unchecked Sendable {
    // @unchecked: `buffer` is guarded by `lock`.
    private let lock = NSLock()
    private var buffer: [UInt8] = []
    private let done = DispatchSemaphore(value: 0)

    init(_ handle: FileHandle) {
        Thread { [self] in
            while true {
                let data = handle.availableData
                if data.isEmpty { break }
                lock.withLock {
                    buffer += data
                    if buffer.count > 4096 { buffer.removeFirst(buffer.count - 4096) }
                }
            }
            done.signal()
        }.start()
    }

    func text() -> String {
        _ = done.wait(timeout: .now() + 1)
        let bytes = lock.withLock { buffer.suffix(400) }
        return String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }
}

/// Stops a training command at most once, and never after it has exited (its process id could
/// belong to another process by then).
final class CommandStopper: @unchecked Sendable {
    // @unchecked: every field is guarded by `lock`.
    private let lock = NSLock()
    private let process: Process
    private var running = true
    private var stopped = false
    private var stoppedForTime = false

    init(_ process: Process) { self.process = process }

    /// Whether the timeout, rather than a cancellation, stopped it.
    var timedOut: Bool { lock.withLock { stoppedForTime } }

    /// SIGTERM now and SIGKILL in 2 s, unless it has exited by then.
    func stop(timedOut: Bool = false) {
        let pid: Int32? = lock.withLock {
            guard running, !stopped else { return nil }
            stopped = true
            stoppedForTime = timedOut
            return process.processIdentifier
        }
        guard let pid else { return }
        signal(pid, SIGTERM)
        DispatchQueue.global().asyncAfter(deadline: .now() + 2) { [self] in self.signal(pid, SIGKILL) }
    }

    /// The process has exited: no signal is sent from now on.
    func exited() { lock.withLock { running = false } }

    private func signal(_ pid: Int32, _ number: Int32) {
        lock.withLock { if running && process.isRunning { _ = kill(pid, number) } }
    }
}
