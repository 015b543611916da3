import FedCore
import Foundation

/// The optimizer a site trains with: SGD with (heavy-ball) momentum, or Adam (Kingma & Ba,
/// with bias correction). Its state lives for one task: every round starts from fresh moments.
public struct LocalOptimizer {
    public enum Kind: String, ConfigurationChoice {
        case sgd, adam
    }

    public let kind: Kind
    public let learningRate: Float
    public let momentum: Float
    public let beta1: Float = 0.9
    public let beta2: Float = 0.999
    public let epsilon: Float = 1e-8
    private var first: [Float]
    private var second: [Float]
    private var steps = 0

    public init(kind: Kind, learningRate: Double, momentum: Double = 0, parameterCount: Int) {
        self.kind = kind
        self.learningRate = Float(learningRate)
        self.momentum = Float(momentum)
        first = kind == .adam || momentum != 0 ? [Float](repeating: 0, count: parameterCount) : []
        second = kind == .adam ? [Float](repeating: 0, count: parameterCount) : []
    }

    /// One step against `gradient`.
    public mutating func step(_ parameters: UnsafeMutablePointer<Float>, gradient: UnsafePointer<Float>, count: Int) {
        steps += 1
        switch kind {
        case .sgd where momentum == 0:
            Kernels.axpy(-learningRate, gradient, parameters, count)
        case .sgd:
            let (rate, momentum) = (learningRate, momentum)
            first.withUnsafeMutableBufferPointer { velocity in
                for i in 0..<count {
                    velocity[i] = momentum * velocity[i] + gradient[i]
                    parameters[i] -= rate * velocity[i]
                }
            }
        case .adam:
            let (b1, b2, epsilon) = (beta1, beta2, epsilon)
            let rate = learningRate * Float((1 - pow(Double(b2), Double(steps))).squareRoot() / (1 - pow(Double(b1), Double(steps))))
            first.withUnsafeMutableBufferPointer { m in
                second.withUnsafeMutableBufferPointer { v in
                    for i in 0..<count {
                        let g = gradient[i]
                        m[i] = b1 * m[i] + (1 - b1) * g
                        v[i] = b2 * v[i] + (1 - b2) * g * g
                        parameters[i] -= rate * m[i] / (v[i].squareRoot() + epsilon)
                    }
                }
            }
        }
    }
}
