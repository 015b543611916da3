import FedAgent
import Foundation
import Testing

@Suite("Witness file default")
struct WitnessDefaultTests {
    @Test("An agent loaded from NAME.json keeps its witness in NAME.witness.jsonl beside it")
    func defaultBesideConfiguration() throws {
        let federation = try Federation()
        let path = federation.directory + "/hospital-a.json"
        let json = """
            {"coordinator": {"host": "localhost", "port": 7443},
             "tls": {"certificate": "\(federation.files.agentCertificate("hospital-a"))", "private_key": "\(federation.files.agentKey("hospital-a"))",
                     "ca": "\(federation.files.caCertificate)"},
             "trainer": {"kind": "benchmark"}}
            """
        try json.write(toFile: path, atomically: true, encoding: .utf8)
        let configuration = try AgentConfiguration.load(path: path)
        #expect(configuration.witnessFile == federation.directory + "/hospital-a.witness.jsonl")
    }
}
