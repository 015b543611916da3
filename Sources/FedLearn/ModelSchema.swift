import FedCore
import Foundation

/// What the federation trains: the data columns every site must have, the label, and the
/// model's architecture. The coordinator publishes it (in its Welcome); an agent checks its
/// local data against it before it may be selected.
///
/// Its canonical JSON (``canonicalJSON()``, keys sorted) is what the agent and the coordinator
/// compare, by SHA-256.
public struct ModelSchema: Codable, Sendable, Equatable {
    /// The model families local training implements.
    public enum Kind: String, Codable, Sendable, CaseIterable {
        /// Binary logistic regression: one linear layer, sigmoid output.
        case logistic
        /// Multiclass softmax regression: one linear layer, softmax output.
        case softmax
        /// Multilayer perceptron: `hidden` ReLU layers, then sigmoid (2 classes) or softmax.
        case mlp
    }

    /// What to do with an empty or non-numeric feature value.
    public enum MissingValuePolicy: String, Codable, Sendable {
        /// Refuse the file, naming the line and column (the default).
        case error
        /// Leave the row out of training and evaluation.
        case dropRow = "drop_row"
        /// Replace the value by the federation's mean of that feature (frozen with the model).
        case imputeMean = "impute_mean"
    }

    public var kind: Kind
    /// The feature columns, in the model's input order.
    public var features: [String]
    /// The label column: integers 0 ..< classes.
    public var label: String
    public var classes: Int
    /// Widths of the hidden layers (MLP only).
    public var hidden: [Int]
    /// Standardize features with the federation's means and standard deviations.
    public var standardize: Bool
    /// The policy for a missing value, per feature column; `"*"` sets the default.
    public var missing: [String: MissingValuePolicy]

    public init(kind: Kind, features: [String], label: String, classes: Int = 2, hidden: [Int] = [], standardize: Bool = true,
                missing: [String: MissingValuePolicy] = [:]) {
        self.kind = kind
        self.features = features
        self.label = label
        self.classes = classes
        self.hidden = hidden
        self.standardize = standardize
        self.missing = missing
    }

    enum CodingKeys: String, CodingKey { case kind, features, label, classes, hidden, standardize, missing }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        kind = try c.decode(Kind.self, forKey: .kind)
        features = try c.decode([String].self, forKey: .features)
        label = try c.decode(String.self, forKey: .label)
        classes = try c.decodeIfPresent(Int.self, forKey: .classes) ?? 2
        hidden = try c.decodeIfPresent([Int].self, forKey: .hidden) ?? []
        standardize = try c.decodeIfPresent(Bool.self, forKey: .standardize) ?? true
        missing = try c.decodeIfPresent([String: MissingValuePolicy].self, forKey: .missing) ?? [:]
    }

    /// The policy for one feature column.
    public func policy(for column: String) -> MissingValuePolicy { missing[column] ?? missing["*"] ?? .error }

    /// Refuses impossible schemas, saying what to fix.
    public func validate() throws {
        guard !features.isEmpty else { throw LearnError(.invalidSchema, "the model schema names no feature columns") }
        var seen = Set<String>()
        for name in features + [label] {
            guard !name.isEmpty else { throw LearnError(.invalidSchema, "the model schema has an empty column name") }
            guard seen.insert(name).inserted else {
                throw LearnError(.invalidSchema, "column '\(name)' appears twice in the model schema (features and label must be distinct)")
            }
        }
        guard classes >= 2 && classes <= 1000 else { throw LearnError(.invalidSchema, "classes must be between 2 and 1000, not \(classes)") }
        switch kind {
        case .logistic:
            guard classes == 2 else { throw LearnError(.invalidSchema, "logistic regression is binary; use \"softmax\" for \(classes) classes") }
            guard hidden.isEmpty else { throw LearnError(.invalidSchema, "logistic regression has no hidden layers; use \"mlp\"") }
        case .softmax:
            guard hidden.isEmpty else { throw LearnError(.invalidSchema, "softmax regression has no hidden layers; use \"mlp\"") }
        case .mlp:
            guard !hidden.isEmpty else { throw LearnError(.invalidSchema, "an MLP needs at least one hidden layer (\"hidden\": [64])") }
        }
        guard hidden.allSatisfy({ $0 > 0 && $0 <= 65536 }) else { throw LearnError(.invalidSchema, "hidden layer widths must be 1 … 65536") }
        for column in missing.keys where column != "*" && !features.contains(column) {
            throw LearnError(.invalidSchema, "missing-value policy for '\(column)', which is not a feature column")
        }
    }

    /// Units per layer, input first: `[features, hidden…, outputs]`.
    public var layerSizes: [Int] { [features.count] + hidden + [outputCount] }

    /// One output (the logit of class 1) for two classes, else one per class.
    public var outputCount: Int { kind == .softmax || classes > 2 ? classes : 1 }

    /// The model's tensors: `layer<i>.weight` `[out, in]` and `layer<i>.bias` `[out]`, as PyTorch's
    /// `nn.Linear` names and shapes them.
    public var layout: ModelLayout {
        let sizes = layerSizes
        var specs: [TensorSpec] = []
        for layer in 0..<sizes.count - 1 {
            specs.append(TensorSpec(name: "layer\(layer).weight", shape: [sizes[layer + 1], sizes[layer]]))
            specs.append(TensorSpec(name: "layer\(layer).bias", shape: [sizes[layer + 1]]))
        }
        // The sizes are validated positive, so the layout is valid.
        return try! ModelLayout(specs)
    }

    /// The initial global model: zeros for linear models (their loss is convex), Glorot-uniform
    /// weights from `seed` and zero biases for an MLP.
    public func initialParameters(seed: UInt64) -> ModelParameters {
        var parameters = ModelParameters(zerosFor: layout)
        guard kind == .mlp else { return parameters }
        var random = SplitMix64(seed: seed)
        let sizes = layerSizes
        for layer in 0..<sizes.count - 1 {
            let limit = Float((6.0 / Double(sizes[layer] + sizes[layer + 1])).squareRoot())
            for index in layout.range(of: 2 * layer) {
                parameters.values[index] = (Float(random.next() >> 40) / Float(1 << 24) * 2 - 1) * limit
            }
        }
        return parameters
    }

    /// The schema as JSON with sorted keys: the text both sides hash and compare.
    public func canonicalJSON() -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try! encoder.encode(self), as: UTF8.self)
    }

    /// Parses a schema published by the coordinator (``canonicalJSON()``) and validates it.
    public static func decode(json: String) throws -> ModelSchema {
        let schema: ModelSchema
        do { schema = try JSONDecoder().decode(ModelSchema.self, from: Data(json.utf8)) } catch {
            throw LearnError(.invalidSchema, "the model schema is not valid: \(error)")
        }
        try schema.validate()
        return schema
    }
}
