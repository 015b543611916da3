import FedCore
import Foundation

/// Hospital-style tabular data for demos and benchmarks: each site's patients (age, sex, BMI,
/// blood pressure, glucose, cholesterol, smoking, prior admissions, length of stay) and a 30-day
/// readmission outcome drawn from one hidden logistic model. Sites differ in demographics and in
/// baseline risk (non-IID), as real hospitals do. Deterministic for a seed. Not patient data.
public enum SyntheticHospitals {
    public static let featureColumns = [
        "age", "sex", "bmi", "systolic_bp", "glucose", "cholesterol", "smoker", "prior_admissions", "length_of_stay",
    ]
    public static let labelColumn = "readmitted_30d"

    /// The schema of the synthetic data: binary logistic regression on the nine features.
    public static var schema: ModelSchema {
        ModelSchema(kind: .logistic, features: featureColumns, label: labelColumn)
    }

    /// One site's character.
    struct Profile {
        var ageMean: Double
        var bmiMean: Double
        var smokerRate: Double
        /// Added to the hidden model's logit: the site's baseline risk.
        var riskShift: Double
    }

    static func profile(site: Int, sites: Int, seed: UInt64) -> Profile {
        var random = SplitMix64(seed: seed ^ (0xA5A5_0000 &+ UInt64(site)))
        func uniform() -> Double { Double(random.next() >> 11) / Double(1 << 53) }
        return Profile(ageMean: 50 + 20 * uniform(), bmiMean: 24 + 6 * uniform(), smokerRate: 0.08 + 0.3 * uniform(), riskShift: -0.8 + 1.6 * uniform())
    }

    /// Writes `site1.csv` … `site<sites>.csv` (`rows` patients each) and `test.csv` (`rows`
    /// patients drawn from all sites alike) into `directory`; returns the paths written.
    @discardableResult
    public static func write(sites: Int, rows: Int, seed: UInt64, to directory: String) throws -> [String] {
        guard sites >= 1, sites <= 1000, rows >= 1, rows <= 10_000_000 else {
            throw LearnError(.invalidValue, "--sites must be 1 … 1000 and --rows 1 … 10000000")
        }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var paths: [String] = []
        for site in 1...sites {
            let path = directory + "/site\(site).csv"
            try csv(rows: rows, profiles: [profile(site: site, sites: sites, seed: seed)], seed: seed &+ UInt64(site) &* 7919, idPrefix: "S\(site)")
                .write(toFile: path, atomically: true, encoding: .utf8)
            paths.append(path)
        }
        let path = directory + "/test.csv"
        try csv(rows: rows, profiles: (1...sites).map { profile(site: $0, sites: sites, seed: seed) }, seed: seed ^ 0x7E57, idPrefix: "T")
            .write(toFile: path, atomically: true, encoding: .utf8)
        paths.append(path)
        return paths
    }

    /// CSV text for `rows` patients, each from a profile picked in turn.
    static func csv(rows: Int, profiles: [Profile], seed: UInt64, idPrefix: String) -> String {
        var random = SplitMix64(seed: seed)
        func uniform() -> Double { (Double(random.next() >> 11) + 0.5) / Double(1 << 53) }
        func normal(_ mean: Double, _ deviation: Double) -> Double {
            mean + deviation * (-2 * log(uniform())).squareRoot() * cos(2 * .pi * uniform())
        }
        func poisson(_ rate: Double) -> Int {
            let limit = exp(-rate)
            var count = 0, product = uniform()
            while product > limit && count < 50 {
                count += 1
                product *= uniform()
            }
            return count
        }
        var lines = ["admission_id," + (featureColumns + [labelColumn]).joined(separator: ",")]
        lines.reserveCapacity(rows + 1)
        for row in 0..<rows {
            let p = profiles[row % profiles.count]
            let age = min(95, max(18, normal(p.ageMean, 14)))
            let sex = uniform() < 0.5 ? 1 : 0
            let bmi = min(60, max(15, normal(p.bmiMean, 5)))
            let systolic = min(230, max(80, normal(120 + 0.4 * (age - 50), 16)))
            let glucose = min(400, max(55, normal(95 + 1.5 * (bmi - 27), 22)))
            let cholesterol = min(400, max(100, normal(195 + 0.3 * (age - 50), 35)))
            let smoker = uniform() < p.smokerRate ? 1 : 0
            let prior = poisson(max(0.05, 0.3 + 0.025 * (age - 50)))
            let stay = max(1, Int(exp(normal(1.1 + 0.01 * (age - 60), 0.5)).rounded()))
            let logit = -1.6 + p.riskShift + 0.07 * (age - 60) + 0.12 * (bmi - 27) + 0.025 * (systolic - 130) + 0.018 * (glucose - 100)
                + 0.008 * (cholesterol - 200) + 1.1 * Double(smoker) + 0.8 * Double(prior) + 0.2 * Double(stay - 4) + 0.3 * Double(sex)
            let readmitted = uniform() < 1 / (1 + exp(-logit)) ? 1 : 0
            lines.append(String(
                format: "%@%06d,%.0f,%d,%.1f,%.0f,%.0f,%.0f,%d,%d,%d,%d", idPrefix, row, age, sex, bmi, systolic, glucose, cholesterol, smoker, prior,
                stay, readmitted))
        }
        return lines.joined(separator: "\n") + "\n"
    }
}
