import FedAgent
import FedCoordinator
import FedCore
import FedLearn
import FedWire
import Foundation
import Testing

/// The real `fedagent` executable: `check` and `synth`, as site IT runs them.
@Suite("fedagent check and synth", .serialized)
struct AgentCommandTests {
    /// Runs a process; returns its status, standard output and standard error.
    func run(_ path: String, _ arguments: [String]) throws -> (Int32, String, String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        let output = Pipe(), errors = Pipe()
        process.standardOutput = output
        process.standardError = errors
        try process.run()
        let out = output.fileHandleForReading.readDataToEndOfFile()
        let err = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: out, as: UTF8.self), String(decoding: err, as: UTF8.self))
    }

    func writeAgentConfiguration(_ federation: Federation, port: UInt16, csv: String) throws -> String {
        let json: [String: Any] = [
            "coordinator": ["host": "localhost", "port": Int(port)],
            "tls": ["certificate": federation.files.agentCertificate("hospital-a"), "private_key": federation.files.agentKey("hospital-a"),
                    "ca": federation.files.caCertificate],
            "trainer": ["kind": "local"],
            "data": ["csv": csv, "holdout_fraction": 0.25],
        ]
        let path = federation.directory + "/agent.json"
        try JSONSerialization.data(withJSONObject: json).write(to: URL(fileURLWithPath: path))
        return path
    }

    @Test("check asks the coordinator for its schema, prints rows, classes and ranges, and names the bad line and column")
    func check() throws {
        let fedagent = try executable("fedagent")
        let federation = try Federation()
        let configuration = try LearningEndToEndTests.configuration(federation, rounds: 1, selection: ["target": 2, "min_available": 2, "min_updates": 2], evaluateEvery: 0)
        let coordinator = try RunningCoordinator(configuration)
        let config = try writeAgentConfiguration(federation, port: coordinator.port, csv: LearningEndToEndTests.site(4))
        let (status, output, errors) = try run(fedagent, ["check", "--config", config])
        #expect(status == 0, "\(errors)")
        #expect(output.contains("matches the federation's model schema (logistic, 30 features, label 'label')"), "\(output)")
        #expect(output.contains("193 training rows, 64 held out") && output.contains("worst_area") && output.contains("Nothing was sent"), "\(output)")

        // A damaged copy: line 5 gets a word where a number belongs.
        var lines = try String(contentsOfFile: LearningEndToEndTests.site(4), encoding: .utf8).split(separator: "\n").map(String.init)
        var fields = lines[4].split(separator: ",").map(String.init)
        fields[2] = "unknown"
        lines[4] = fields.joined(separator: ",")
        let damaged = federation.directory + "/damaged.csv"
        try (lines.joined(separator: "\n") + "\n").write(toFile: damaged, atomically: true, encoding: .utf8)
        let bad = try writeAgentConfiguration(federation, port: coordinator.port, csv: damaged)
        // Offline, from the schema the coordinator published in its state folder.
        let (badStatus, badOutput, _) = try run(fedagent, ["check", "--config", bad, "--schema", configuration.stateDir + "/schema.json"])
        #expect(badStatus == 1)
        #expect(badOutput.contains("damaged.csv' line 5, column 'mean_perimeter': 'unknown' is not a number"), "\(badOutput)")
    }

    @Test("synth writes one CSV per site and a test file that check accepts; bad arguments are refused")
    func synth() throws {
        let fedagent = try executable("fedagent")
        let federation = try Federation()
        let out = federation.directory + "/synthetic"
        let (status, output, errors) = try run(fedagent, ["synth", "--sites", "3", "--rows", "300", "--seed", "7", "--out", out])
        #expect(status == 0, "\(errors)")
        #expect(output.contains("site3.csv") && output.contains("test.csv"))
        for name in ["site1", "site2", "site3", "test"] {
            let data = try Dataset.load(csv: out + "/\(name).csv", schema: SyntheticHospitals.schema)
            #expect(data.rowCount == 300 && data.classCounts.allSatisfy { $0 > 0 })
        }
        let (badStatus, _, badErrors) = try run(fedagent, ["synth", "--sites", "0", "--out", out])
        #expect(badStatus != 0 && badErrors.contains("--sites must be"))
    }

    @Test("An unknown --log-level is refused, naming the levels, before anything starts")
    func logLevel() throws {
        let fedagent = try executable("fedagent")
        let (status, _, errors) = try run(fedagent, ["run", "--config", "/nowhere/agent.json", "--log-level", "verbose"])
        #expect(status != 0 && errors.contains("The value 'verbose' is invalid for '--log-level") && errors.contains("warning"), "\(errors)")
    }
}
