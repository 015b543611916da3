import Foundation
@testable import FedLearn

/// Paths of the committed test data, and scratch folders.
enum Fixtures {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fixtures").path
    static func breastCancer(_ name: String) -> String { root + "/breast_cancer/breast_cancer.\(name).csv" }

    static let breastCancerFeatures = [
        "mean_radius", "mean_texture", "mean_perimeter", "mean_area", "mean_smoothness", "mean_compactness", "mean_concavity",
        "mean_concave_points", "mean_symmetry", "mean_fractal_dimension", "radius_error", "texture_error", "perimeter_error", "area_error",
        "smoothness_error", "compactness_error", "concavity_error", "concave_points_error", "symmetry_error", "fractal_dimension_error",
        "worst_radius", "worst_texture", "worst_perimeter", "worst_area", "worst_smoothness", "worst_compactness", "worst_concavity",
        "worst_concave_points", "worst_symmetry", "worst_fractal_dimension",
    ]
    static var breastCancerSchema: ModelSchema { ModelSchema(kind: .logistic, features: breastCancerFeatures, label: "label") }

    /// A fresh folder, removed by the caller.
    static func scratch() -> String {
        let path = NSTemporaryDirectory() + "fedlearn-\(UUID().uuidString)"
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    static func write(_ text: String, in directory: String, name: String = "data.csv") -> String {
        let path = directory + "/" + name
        try! text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }
}
