import FedAgent
import FedCoordinator
import FedCore
import FedLearn
import Foundation
import Testing

/// The README's configuration tables list every field the files may hold, and no other; for every
/// field that takes one of a closed set of names, exactly the names its enum accepts and the
/// default the code uses.
@Suite("Configuration reference")
struct ConfigurationReferenceTests {
    struct Choice: CustomStringConvertible, Sendable {
        let field: String
        let names: [String]
        let defaultName: String
        var description: String { field }

        init<T: ConfigurationChoice>(_ field: String, _ type: T.Type, default value: T) {
            self.field = field
            names = T.allCases.map(\.rawValue)
            defaultName = value.rawValue
        }
    }

    static let choices: [Choice] = [
        Choice("model.kind", CoordinatorConfiguration.ModelKind.self, default: CoordinatorConfiguration.Model().kind),
        Choice("model.init", CoordinatorConfiguration.ModelInitialization.self, default: CoordinatorConfiguration.Model().initialization),
        Choice("optimizer.kind", ServerOptimizer.Kind.self, default: ServerOptimizer.Settings().kind),
        Choice("task.local_optimizer", LocalOptimizer.Kind.self, default: CoordinatorConfiguration.Task().localOptimizer),
        Choice("strategy", AggregationStrategy.self, default: .mean),
        Choice("secure_aggregation.graph", CoordinatorConfiguration.SecureGraph.self, default: CoordinatorConfiguration.SecureAggregation().graph),
        Choice("trainer.kind", AgentConfiguration.TrainerKind.self, default: AgentConfiguration.Trainer().kind),
    ]

    /// The rows of the README's configuration tables (from "### coordinator.json" to the next
    /// top-level section), keyed by each field named in the first cell; a name without a dot
    /// after the first (`optimizer.learning_rate`, `momentum`) shares the first one's prefix.
    static func rows() throws -> [String: (defaultCell: String, index: Int, description: String)] {
        let readme = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("README.md")
        var rows: [String: (String, Int, String)] = [:]
        let text = try String(contentsOf: readme, encoding: .utf8)
        let start = try #require(text.range(of: "### coordinator.json"), "README has no coordinator.json section")
        let end = text.range(of: "\n## ", range: start.upperBound..<text.endIndex)?.lowerBound ?? text.endIndex
        for line in text[start.lowerBound..<end].split(separator: "\n") where line.hasPrefix("| `") {
            let cells = line.split(separator: "|", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
            guard cells.count >= 4 else { continue }
            let fields = cells[1].split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces).trimmingCharacters(in: CharacterSet(charactersIn: "`")) }
            let prefix = fields[0].range(of: ".", options: .backwards).map { String(fields[0][..<$0.upperBound]) } ?? ""
            for (index, field) in fields.enumerated() { rows[field.contains(".") ? field : prefix + field] = (cells[2], index, cells[3]) }
        }
        return rows
    }

    /// Every field a file may hold, as a dotted path (nested sections' fields, not the sections).
    static func leaves(_ schema: StrictConfiguration.Schema, _ prefix: String = "") -> Set<String> {
        guard case .object(let fields) = schema else { return [prefix] }
        return fields.reduce(into: []) { paths, field in paths.formUnion(leaves(field.value, prefix.isEmpty ? field.key : prefix + "." + field.key)) }
    }

    @Test("Every field of coordinator.json and agent.json has a README row, and every row is a field")
    func readmeListsEveryField() throws {
        let documented = Set(try Self.rows().keys)
        let coordinator = Self.leaves(CoordinatorConfiguration.schema), agent = Self.leaves(AgentConfiguration.schema)
        #expect(coordinator.count > 60 && agent.count > 20)
        #expect(coordinator.subtracting(documented).isEmpty, "coordinator.json fields without a README row: \(coordinator.subtracting(documented).sorted())")
        #expect(agent.subtracting(documented).isEmpty, "agent.json fields without a README row: \(agent.subtracting(documented).sorted())")
        let unknown = documented.subtracting(coordinator).subtracting(agent)
        #expect(unknown.isEmpty, "README rows for fields the files cannot hold: \(unknown.sorted())")
    }

    @Test("Each closed-set field's README row names its default and every accepted name", arguments: choices)
    func readmeMatchesEnum(choice: Choice) throws {
        let row = try #require(try Self.rows()[choice.field], "README has no table row for \(choice.field)")
        let defaults = row.defaultCell.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        #expect(defaults.indices.contains(row.index) && defaults[row.index] == "`\(choice.defaultName)`",
                "\(choice.field): README default \(row.defaultCell), code default \(choice.defaultName)")
        for name in choice.names {
            #expect(row.description.contains("`\(name)`"), "\(choice.field): README does not document `\(name)`")
        }
    }
}
