import FedCore
import Foundation

/// A feed-forward network over a flat Float32 parameter buffer laid out as
/// ``ModelSchema/layout``: logistic and softmax regression are the networks without hidden
/// layers. Hidden layers use ReLU; one output means a sigmoid (binary cross-entropy), more mean a
/// softmax (cross-entropy).
///
/// A network owns scratch buffers for up to `capacity` rows and is used by one thread at a time.
/// Cost of ``lossAndGradient(parameters:inputs:labels:count:gradient:)``: about three
/// multiply-adds per parameter per row.
public final class Network {
    public let sizes: [Int]
    public let capacity: Int
    let weightOffsets: [Int]
    let biasOffsets: [Int]
    public let parameterCount: Int
    /// Layer outputs (after ReLU for hidden layers; logits for the last), `capacity × sizes[l + 1]`.
    private let activations: [UnsafeMutablePointer<Float>]
    /// The loss's derivative with respect to each layer's pre-activation output.
    private let deltas: [UnsafeMutablePointer<Float>]

    public init(schema: ModelSchema, capacity: Int) {
        sizes = schema.layerSizes
        self.capacity = max(1, capacity)
        var weights: [Int] = [], biases: [Int] = []
        var offset = 0
        for layer in 0..<sizes.count - 1 {
            weights.append(offset)
            offset += sizes[layer] * sizes[layer + 1]
            biases.append(offset)
            offset += sizes[layer + 1]
        }
        weightOffsets = weights
        biasOffsets = biases
        parameterCount = offset
        activations = sizes.dropFirst().map { UnsafeMutablePointer<Float>.allocate(capacity: $0 * max(1, capacity)) }
        deltas = sizes.dropFirst().map { UnsafeMutablePointer<Float>.allocate(capacity: $0 * max(1, capacity)) }
    }

    deinit {
        for buffer in activations + deltas { buffer.deallocate() }
    }

    var layerCount: Int { sizes.count - 1 }
    public var outputCount: Int { sizes.last! }

    /// Runs `count ≤ capacity` rows (row-major, `count × sizes[0]`) through the network; returns
    /// the logits, `count × outputCount`, valid until the next call.
    @discardableResult
    public func forward(parameters: UnsafePointer<Float>, inputs: UnsafePointer<Float>, count: Int) -> UnsafePointer<Float> {
        precondition(count <= capacity, "a batch of \(count) rows exceeds the network's capacity of \(capacity)")
        var input = inputs
        for layer in 0..<layerCount {
            let fanIn = sizes[layer], fanOut = sizes[layer + 1]
            let weights = parameters + weightOffsets[layer], biases = parameters + biasOffsets[layer]
            let output = activations[layer]
            let hidden = layer < layerCount - 1
            for row in 0..<count {
                let x = input + row * fanIn
                let y = output + row * fanOut
                for unit in 0..<fanOut {
                    let z = biases[unit] + Kernels.dot(x, weights + unit * fanIn, fanIn)
                    y[unit] = hidden ? max(z, 0) : z
                }
            }
            input = UnsafePointer(output)
        }
        return UnsafePointer(activations[layerCount - 1])
    }

    /// The mean loss over `count` rows and its gradient, written (not added) into `gradient`.
    /// Returns the summed loss (divide by `count` for the mean).
    public func lossAndGradient(
        parameters: UnsafePointer<Float>, inputs: UnsafePointer<Float>, labels: UnsafePointer<Int32>, count: Int,
        gradient: UnsafeMutablePointer<Float>
    ) -> Double {
        let logits = forward(parameters: parameters, inputs: inputs, count: count)
        let outputs = outputCount
        let scale = 1 / Float(count)
        let delta = deltas[layerCount - 1]
        var loss = 0.0
        for row in 0..<count {
            let z = logits + row * outputs, d = delta + row * outputs
            let label = Int(labels[row])
            if outputs == 1 {
                let logit = Double(z[0]), y = Double(label)
                loss += max(logit, 0) - logit * y + log1p(exp(-abs(logit)))
                d[0] = (Float(Self.sigmoid(logit)) - Float(label)) * scale
            } else {
                var largest = z[0]
                for k in 1..<outputs { largest = max(largest, z[k]) }
                var total: Float = 0
                for k in 0..<outputs {
                    d[k] = exp(z[k] - largest)
                    total += d[k]
                }
                loss += Double(largest) + log(Double(total)) - Double(z[label])
                for k in 0..<outputs { d[k] = (d[k] / total - (k == label ? 1 : 0)) * scale }
            }
        }
        gradient.initialize(repeating: 0, count: parameterCount)
        for layer in stride(from: layerCount - 1, through: 0, by: -1) {
            let fanIn = sizes[layer], fanOut = sizes[layer + 1]
            let input = layer == 0 ? inputs : UnsafePointer(activations[layer - 1])
            let d = deltas[layer]
            let weightGradient = gradient + weightOffsets[layer], biasGradient = gradient + biasOffsets[layer]
            for row in 0..<count {
                let x = input + row * fanIn
                for unit in 0..<fanOut {
                    let g = d[row * fanOut + unit]
                    if g == 0 { continue }
                    biasGradient[unit] += g
                    Kernels.axpy(g, x, weightGradient + unit * fanIn, fanIn)
                }
            }
            guard layer > 0 else { break }
            // Back through the weights, then through the ReLU of the layer below.
            let below = deltas[layer - 1]
            let weights = parameters + weightOffsets[layer]
            below.initialize(repeating: 0, count: count * fanIn)
            for row in 0..<count {
                let target = below + row * fanIn
                for unit in 0..<fanOut {
                    let g = d[row * fanOut + unit]
                    if g != 0 { Kernels.axpy(g, weights + unit * fanIn, target, fanIn) }
                }
                let activation = input + row * fanIn
                for k in 0..<fanIn where activation[k] <= 0 { target[k] = 0 }
            }
        }
        return loss
    }

    static func sigmoid(_ z: Double) -> Double {
        z >= 0 ? 1 / (1 + exp(-z)) : exp(z) / (1 + exp(z))
    }

    /// The weight tensors' ranges in the flat buffer (L2 applies to weights, not biases).
    public var weightRanges: [Range<Int>] {
        (0..<layerCount).map { weightOffsets[$0]..<weightOffsets[$0] + sizes[$0] * sizes[$0 + 1] }
    }
}
