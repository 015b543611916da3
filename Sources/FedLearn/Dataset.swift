import FedCore
import Foundation

/// A site's examples, read from its CSV against the federation's ``ModelSchema``: the feature
/// columns in the schema's order (extra columns ignored) and integer labels.
///
/// Values are kept raw; a value left to impute is NaN until ``standardized(with:)`` replaces it
/// by the federation's mean. Memory: 4 bytes per feature value plus 4 per row.
public struct Dataset: Sendable {
    public let featureNames: [String]
    /// Row-major, `rowCount × featureCount`.
    public private(set) var features: [Float]
    public private(set) var labels: [Int32]
    /// Rows left out under the `drop_row` policy.
    public private(set) var droppedRows = 0
    /// Values left to the federation's mean under `impute_mean`, per feature.
    public private(set) var imputedValues: [Int]
    public let classes: Int

    public var featureCount: Int { featureNames.count }
    public var rowCount: Int { labels.count }

    init(featureNames: [String], features: [Float], labels: [Int32], classes: Int) {
        self.featureNames = featureNames
        self.features = features
        self.labels = labels
        self.classes = classes
        imputedValues = Array(repeating: 0, count: featureNames.count)
    }

    /// Reads `path` and checks it against `schema`.
    ///
    /// - Throws: ``LearnError`` naming the file, line and column: an empty file, a missing or
    ///   duplicated column, a non-numeric or missing value (unless the column's policy drops the
    ///   row or imputes it), a label that is not one of the model's classes.
    public static func load(csv path: String, schema: ModelSchema) throws -> Dataset {
        var reader = try CSVReader(path: path)
        guard let header = try reader.nextRecord() else {
            throw LearnError(.schemaMismatch, "'\(path)' is empty: it needs a header row naming the columns, then one row per example",
                             shareable: "the data file is empty")
        }
        var positions: [String: Int] = [:]
        for (index, name) in header.enumerated() {
            let name = name.trimmingCharacters(in: .whitespaces)
            if let first = positions[name] {
                throw LearnError(.schemaMismatch, "'\(path)' has the column '\(name)' twice (columns \(first + 1) and \(index + 1)); rename or remove one",
                                 shareable: "the header names one column twice (columns \(first + 1) and \(index + 1))")
            }
            positions[name] = index
        }
        let missing = (schema.features + [schema.label]).filter { positions[$0] == nil }
        guard missing.isEmpty else {
            throw LearnError(.schemaMismatch, "'\(path)' has no column\(missing.count > 1 ? "s" : "") \(missing.map { "'\($0)'" }.joined(separator: ", ")); "
                + "the federation's model needs the features \(schema.features.joined(separator: ", ")) and the label '\(schema.label)'",
                shareable: "no column\(missing.count > 1 ? "s" : "") \(missing.map { "'\($0)'" }.joined(separator: ", ")) in the data file")
        }
        let featureColumns = schema.features.map { positions[$0]! }
        let labelColumn = positions[schema.label]!
        let policies = schema.features.map { schema.policy(for: $0) }
        var dataset = Dataset(featureNames: schema.features, features: [], labels: [], classes: schema.classes)
        var row = [Float](repeating: 0, count: featureColumns.count)
        while let record = try reader.nextRecord() {
            guard record.count == header.count else {
                throw LearnError(.invalidValue, "'\(path)' line \(reader.line) has \(record.count) fields; the header has \(header.count)",
                                 shareable: "line \(reader.line) has \(record.count) fields; the header has \(header.count)")
            }
            var drop = false
            var imputed: [Int] = []
            for (feature, column) in featureColumns.enumerated() {
                let text = record[column].trimmingCharacters(in: .whitespaces)
                if let value = Double(text), value.isFinite {
                    row[feature] = Float(value)
                    continue
                }
                let kind = Self.isMissing(text) ? "is empty (a missing value)" : "is not a number"
                let problem = Self.isMissing(text) ? kind : "'\(text)' \(kind)"
                switch policies[feature] {
                case .error:
                    throw LearnError(.invalidValue, "'\(path)' line \(reader.line), column '\(schema.features[feature])': \(problem); fix the value, "
                        + "or set the column's missing-value policy to drop_row or impute_mean in the model schema",
                        shareable: "line \(reader.line), column '\(schema.features[feature])': the value \(kind)")
                case .dropRow: drop = true
                case .imputeMean:
                    row[feature] = .nan
                    imputed.append(feature)
                }
            }
            let labelText = record[labelColumn].trimmingCharacters(in: .whitespaces)
            guard let label = Double(labelText), label.rounded() == label, label >= 0, label < Double(schema.classes) else {
                throw LearnError(.invalidValue, "'\(path)' line \(reader.line), label column '\(schema.label)': '\(labelText)' is not one of the model's classes "
                    + "0 … \(schema.classes - 1)",
                    shareable: "line \(reader.line), label column '\(schema.label)': the value is not one of the model's classes 0 … \(schema.classes - 1)")
            }
            if drop {
                dataset.droppedRows += 1
                continue
            }
            for feature in imputed { dataset.imputedValues[feature] += 1 }
            dataset.features.append(contentsOf: row)
            dataset.labels.append(Int32(label))
        }
        guard dataset.rowCount > 0 else {
            throw LearnError(.schemaMismatch, "'\(path)' has a header but no usable rows (\(dataset.droppedRows) dropped for missing values)",
                             shareable: "the data file has no usable rows (\(dataset.droppedRows) dropped for missing values)")
        }
        return dataset
    }

    static func isMissing(_ text: String) -> Bool {
        ["", "na", "nan", "null", "?", "-"].contains(text.lowercased())
    }

    /// Splits off a holdout of `fraction` of the rows, chosen with `seed`; the rest is for training.
    public func split(holdoutFraction fraction: Double, seed: UInt64) -> (train: Dataset, holdout: Dataset) {
        var order = Array(0..<rowCount)
        var random = SplitMix64(seed: seed)
        order.shuffle(using: &random)
        let holdoutCount = min(rowCount - 1, Int((Double(rowCount) * fraction).rounded()))
        return (subset(order[holdoutCount...].sorted()), subset(order[..<holdoutCount].sorted()))
    }

    func subset(_ rows: [Int]) -> Dataset {
        var result = Dataset(featureNames: featureNames, features: [], labels: [], classes: classes)
        result.features.reserveCapacity(rows.count * featureCount)
        for row in rows {
            result.features.append(contentsOf: features[row * featureCount..<(row + 1) * featureCount])
            result.labels.append(labels[row])
            for feature in 0..<featureCount where features[row * featureCount + feature].isNaN { result.imputedValues[feature] += 1 }
        }
        return result
    }

    /// Count, mean and sum of squared deviations per feature (values to impute left out).
    public func statistics() -> FeatureStatistics {
        var statistics = FeatureStatistics(featureCount: featureCount)
        for row in 0..<rowCount {
            for feature in 0..<featureCount {
                let value = features[row * featureCount + feature]
                if !value.isNaN { statistics.add(Double(value), feature: feature) }
            }
        }
        return statistics
    }

    /// The features standardized with the federation's means and scales (raw values when nil);
    /// values to impute become the mean (0 once standardized).
    public func standardized(with standardization: Standardization?) -> [Float] {
        var result = features
        for index in result.indices {
            let feature = index % featureCount
            let value = result[index]
            if let standardization {
                let mean = standardization.means[feature]
                result[index] = Float(((value.isNaN ? mean : Double(value)) - mean) / standardization.scales[feature])
            } else if value.isNaN {
                result[index] = 0
            }
        }
        return result
    }

    /// Rows per class.
    public var classCounts: [Int] {
        var counts = [Int](repeating: 0, count: classes)
        for label in labels { counts[Int(label)] += 1 }
        return counts
    }
}
