import FedLearn
import Foundation

/// What `fedagent check` prints about a site's data: rows, class balance and per-column ranges.
/// Aggregates only, and it stays on the site's screen.
struct DataSummary {
    let text: String

    init(dataset: Dataset, holdout: Dataset?, schema: ModelSchema, path: String) {
        var lines = ["\(path): \(dataset.rowCount) training rows" + (holdout.map { ", \($0.rowCount) held out for evaluation" } ?? "")
            + (dataset.droppedRows > 0 ? ", \(dataset.droppedRows) dropped for missing values" : "")]
        let counts = dataset.classCounts
        lines.append("label '\(schema.label)': " + counts.enumerated().map { k, n in
            String(format: "%d → %d (%.1f %%)", k, n, 100 * Double(n) / Double(max(1, dataset.rowCount)))
        }.joined(separator: ", "))
        let width = max(8, schema.features.map(\.count).max() ?? 8)
        lines.append(String(repeating: " ", count: width - 6) + "column        min        max       mean   imputed")
        let statistics = dataset.statistics()
        for (index, name) in schema.features.enumerated() {
            var low = Float.infinity, high = -Float.infinity
            for row in 0..<dataset.rowCount {
                let value = dataset.features[row * dataset.featureCount + index]
                if !value.isNaN { low = min(low, value); high = max(high, value) }
            }
            lines.append(String(repeating: " ", count: max(0, width - name.count)) + name
                + String(format: " %10.4g %10.4g %10.4g %9d", low, high, statistics.means[index], dataset.imputedValues[index]))
        }
        text = lines.joined(separator: "\n")
    }
}
