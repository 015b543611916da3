import Foundation
import Testing
@testable import FedLearn

@Suite("CSV data against the model schema")
struct DatasetTests {
    static let schema = ModelSchema(kind: .logistic, features: ["age", "bmi"], label: "outcome")

    func load(_ text: String, schema: ModelSchema = DatasetTests.schema) throws -> Dataset {
        let directory = Fixtures.scratch()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        return try Dataset.load(csv: Fixtures.write(text, in: directory, name: "site.csv"), schema: schema)
    }

    func error(_ text: String, schema: ModelSchema = DatasetTests.schema) -> LearnError? {
        do {
            _ = try load(text, schema: schema)
            return nil
        } catch let error as LearnError {
            return error
        } catch {
            return nil
        }
    }

    @Test("Columns in any order, extra columns ignored, quoted fields and CRLF")
    func reads() throws {
        let data = try load("id,bmi,\"outcome\",age\r\n1,22.5,0,40\r\n2,\"31\",1,71\r\n\r\n3,27,1,55\r\n")
        #expect(data.rowCount == 3)
        #expect(data.features == [40, 22.5, 71, 31, 55, 27])
        #expect(data.labels == [0, 1, 1])
        #expect(data.classCounts == [1, 2])
    }

    @Test("Errors name the file, the line and the column")
    func errors() throws {
        let nonNumeric = try #require(error("age,bmi,outcome\n40,22,0\n41,abc,1\n"))
        #expect(nonNumeric.code == .invalidValue)
        #expect(nonNumeric.message.contains("site.csv' line 3, column 'bmi'") && nonNumeric.message.contains("'abc' is not a number"))
        let missingValue = try #require(error("age,bmi,outcome\n40,,0\n"))
        #expect(missingValue.message.contains("line 2, column 'bmi'") && missingValue.message.contains("missing value"))
        let missingColumn = try #require(error("age,weight,outcome\n40,80,0\n"))
        #expect(missingColumn.code == .schemaMismatch && missingColumn.message.contains("no column 'bmi'"))
        let duplicated = try #require(error("age,bmi,age,outcome\n40,22,41,0\n"))
        #expect(duplicated.message.contains("column 'age' twice (columns 1 and 3)"))
        let empty = try #require(error(""))
        #expect(empty.message.contains("is empty"))
        let noRows = try #require(error("age,bmi,outcome\n"))
        #expect(noRows.message.contains("no usable rows"))
        let badLabel = try #require(error("age,bmi,outcome\n40,22,0\n40,22,2\n"))
        #expect(badLabel.message.contains("line 3, label column 'outcome': '2' is not one of the model's classes 0 … 1"))
        let ragged = try #require(error("age,bmi,outcome\n40,22\n"))
        #expect(ragged.message.contains("line 2 has 2 fields; the header has 3"))
    }

    @Test("Per-column policies: drop the row, or impute the federation's mean")
    func policies() throws {
        var schema = Self.schema
        schema.missing = ["age": .dropRow, "bmi": .imputeMean]
        let data = try load("age,bmi,outcome\n40,20,0\n,25,1\n60,NA,1\n", schema: schema)
        #expect(data.rowCount == 2 && data.droppedRows == 1 && data.imputedValues == [0, 1])
        let statistics = data.statistics()
        #expect(statistics.counts == [2, 1] && statistics.means == [50, 20])
        let standardization = Standardization(means: [50, 22], scales: [10, 2])
        // The imputed BMI becomes the federation's mean: 0 once standardized.
        #expect(data.standardized(with: standardization) == [-1, -1, 1, 0])
    }

    @Test("Federated statistics merge exactly into the pooled data's mean and variance")
    func statistics() throws {
        let values: [[Double]] = (0..<500).map { i in [Double(i % 17) * 1.5 + 3, sin(Double(i)) * 100] }
        var pooled = FeatureStatistics(featureCount: 2)
        for row in values { for f in 0..<2 { pooled.add(row[f], feature: f) } }
        var merged = FeatureStatistics(featureCount: 2)
        for range in [0..<13, 13..<144, 144..<145, 145..<500] {
            var site = FeatureStatistics(featureCount: 2)
            for row in values[range] { for f in 0..<2 { site.add(row[f], feature: f) } }
            merged.merge(site)
        }
        for f in 0..<2 {
            let column = values.map { $0[f] }
            let mean = column.reduce(0, +) / Double(column.count)
            let m2 = column.reduce(0) { $0 + ($1 - mean) * ($1 - mean) }
            #expect(merged.counts[f] == 500)
            #expect(abs(merged.means[f] - mean) < 1e-12 * max(1, abs(mean)))
            #expect(abs(merged.m2[f] - m2) < 1e-9 * m2)
            #expect(abs(merged.m2[f] - pooled.m2[f]) < 1e-9 * m2)
        }
        let standardization = merged.standardization()
        #expect(abs(standardization.scales[0] - (merged.m2[0] / 500).squareRoot()) < 1e-12)
    }

    @Test("The holdout split is deterministic and disjoint")
    func split() throws {
        let data = try Dataset.load(csv: Fixtures.breastCancer("site2"), schema: Fixtures.breastCancerSchema)
        let (train, holdout) = data.split(holdoutFraction: 0.2, seed: 3)
        #expect(train.rowCount + holdout.rowCount == data.rowCount && holdout.rowCount == 26)
        let again = data.split(holdoutFraction: 0.2, seed: 3)
        #expect(again.holdout.features == holdout.features)
    }

    @Test("Synthetic hospitals: one file per site plus a test file, non-IID, deterministic")
    func synthetic() throws {
        let directory = Fixtures.scratch()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let paths = try SyntheticHospitals.write(sites: 3, rows: 400, seed: 7, to: directory)
        #expect(paths.count == 4)
        let sites = try paths.map { try Dataset.load(csv: $0, schema: SyntheticHospitals.schema) }
        #expect(sites.allSatisfy { $0.rowCount == 400 })
        let prevalences = sites.map { Double($0.classCounts[1]) / 400 }
        #expect(prevalences.allSatisfy { $0 > 0.02 && $0 < 0.98 })
        #expect(Set(prevalences.prefix(3)).count == 3)
        let again = Fixtures.scratch()
        defer { try? FileManager.default.removeItem(atPath: again) }
        try SyntheticHospitals.write(sites: 3, rows: 400, seed: 7, to: again)
        #expect(FileManager.default.contents(atPath: again + "/site2.csv") == FileManager.default.contents(atPath: directory + "/site2.csv"))
    }
}
