import FedCore
import FedLearn
import Foundation

/// Local training throughput: the MLP 30 → 64 → 64 → 1 (Adam, batch 32, L2 1e-4, one epoch) on
/// 100,000 synthetic rows, beside scikit-learn's `MLPClassifier` with the same architecture,
/// optimizer, batch size and data, in the same run. scikit-learn comes from a git-ignored virtual
/// environment (`.bench/venv`) that `make bench` creates.
struct TrainingBenchmark {
    var rows = 100_000
    var runs = 3
    var python = ".bench/venv/bin/python"
    var directory = ".bench"

    static let features = 30
    static var schema: ModelSchema {
        ModelSchema(kind: .mlp, features: (0..<features).map { "x\($0)" }, label: "y", hidden: [64, 64])
    }

    /// Gaussian features and a label from a hidden non-linear model; written as CSV for scikit-learn.
    func makeData() throws -> (inputs: [Float], labels: [Int32], path: String) {
        var random = SplitMix64(seed: 2024)
        func normal() -> Float {
            let u = (Double(random.next() >> 11) + 0.5) / Double(1 << 53), v = Double(random.next() >> 11) / Double(1 << 53)
            return Float((-2 * log(u)).squareRoot() * cos(2 * .pi * v))
        }
        var inputs = [Float](), labels = [Int32]()
        inputs.reserveCapacity(rows * Self.features)
        var lines = [(0..<Self.features).map { "x\($0)" }.joined(separator: ",") + ",y"]
        for _ in 0..<rows {
            let row = (0..<Self.features).map { _ in normal() }
            let score = row[0] * row[1] + sin(row[2]) + 0.5 * row[3] - 0.3 * row[4] * row[4] + 0.2 * row[5...].reduce(0, +) / 5
            let label: Int32 = score + 0.3 * normal() > 0 ? 1 : 0
            inputs += row
            labels.append(label)
            lines.append(row.map { String(format: "%.5f", $0) }.joined(separator: ",") + ",\(label)")
        }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let path = directory + "/mlp-\(rows).csv"
        try (lines.joined(separator: "\n") + "\n").write(toFile: path, atomically: true, encoding: .utf8)
        return (inputs, labels, path)
    }

    /// Rows per second of one epoch, median of `runs`.
    func ours(inputs: [Float], labels: [Int32]) throws -> Double {
        var settings = TrainingSettings()
        settings.optimizer = .adam
        settings.learningRate = 0.001
        settings.batchSize = 32
        settings.l2 = 1e-4
        let global = Self.schema.initialParameters(seed: 1).values
        var rates: [Double] = []
        for run in 0..<runs {
            settings.seed = UInt64(run)
            let started = DispatchTime.now().uptimeNanoseconds
            _ = try LocalTraining.train(schema: Self.schema, global: global, inputs: inputs, labels: labels, settings: settings)
            rates.append(Double(rows) / (Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9))
        }
        return rates.sorted()[rates.count / 2]
    }

    static let sklearnScript = """
    import sys, time, warnings, numpy as np
    from sklearn.neural_network import MLPClassifier
    from sklearn.exceptions import ConvergenceWarning
    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    data = np.loadtxt(sys.argv[1], delimiter=",", skiprows=1, dtype=np.float32)
    X, y = data[:, :-1], data[:, -1].astype(int)
    rates = []
    for run in range(int(sys.argv[2])):
        model = MLPClassifier(hidden_layer_sizes=(64, 64), activation="relu", solver="adam", alpha=1e-4, batch_size=32,
                              learning_rate_init=0.001, max_iter=1, shuffle=True, random_state=run)
        started = time.perf_counter()
        model.fit(X, y)
        rates.append(len(y) / (time.perf_counter() - started))
    print(sorted(rates)[len(rates) // 2])
    """

    /// scikit-learn's rows per second, median of `runs`, or nil (with the reason) when it cannot run.
    func sklearn(path: String) -> (Double?, String) {
        guard FileManager.default.isExecutableFile(atPath: python) else {
            return (nil, "no \(python): run `make bench`, which creates it")
        }
        let script = directory + "/sklearn_mlp.py"
        try? Self.sklearnScript.write(toFile: script, atomically: true, encoding: .utf8)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = [script, path, "\(runs)"]
        let output = Pipe()
        process.standardOutput = output
        do { try process.run() } catch { return (nil, "cannot start \(python): \(error)") }
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let text = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard process.terminationStatus == 0, let rate = Double(text) else { return (nil, "scikit-learn failed (exit \(process.terminationStatus))") }
        let version = (try? String(contentsOfFile: directory + "/venv/sklearn-version", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
        return (rate, version.map { "scikit-learn \($0)" } ?? "scikit-learn")
    }

    func run() throws {
        print("== local training: MLP 30 → 64 → 64 → 1, Adam, batch 32, one epoch of \(rows) rows (median of \(runs))")
        let (inputs, labels, path) = try makeData()
        let ourRate = try ours(inputs: inputs, labels: labels)
        print(String(format: "fedcoord (FedLearn)     %9.0f rows/s", ourRate))
        let (theirRate, label) = sklearn(path: path)
        if let theirRate {
            print(String(format: "%-23@ %9.0f rows/s", label, theirRate))
            print(String(format: "ratio (ours / theirs)   %9.2f   (target ≥ 1.0)", ourRate / theirRate))
        } else {
            print("scikit-learn: not measured: \(label)")
        }
    }
}
