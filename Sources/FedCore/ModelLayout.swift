/// The shape of one named Float32 tensor of a model.
public struct TensorSpec: Codable, Hashable, Sendable {
    public var name: String
    public var shape: [Int]

    public init(name: String, shape: [Int]) {
        self.name = name
        self.shape = shape
    }

    /// Elements in the tensor.
    public var count: Int { shape.reduce(1, *) }
}

/// An ordered set of named tensors stored back to back in one Float32 buffer.
///
/// The order is the model's: it is the order tensors are streamed in, stored in checkpoints and
/// aggregated in.
public struct ModelLayout: Codable, Hashable, Sendable {
    public let tensors: [TensorSpec]
    /// Offset of each tensor's first element in the flat buffer.
    public let offsets: [Int]
    /// Elements in the whole model.
    public let parameterCount: Int

    /// - Precondition: names are unique and non-empty, dimensions positive.
    public init(_ tensors: [TensorSpec]) throws {
        var seen = Set<String>()
        var offsets: [Int] = []
        var total = 0
        for tensor in tensors {
            guard !tensor.name.isEmpty, seen.insert(tensor.name).inserted else {
                throw ModelError("tensor names must be unique and non-empty; '\(tensor.name)' is not")
            }
            guard tensor.shape.allSatisfy({ $0 > 0 }) else {
                throw ModelError("tensor '\(tensor.name)' has shape \(tensor.shape); every dimension must be positive")
            }
            offsets.append(total)
            total += tensor.count
        }
        self.tensors = tensors
        self.offsets = offsets
        parameterCount = total
    }

    enum CodingKeys: String, CodingKey { case tensors }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        try self.init(try container.decode([TensorSpec].self, forKey: .tensors))
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(tensors, forKey: .tensors)
    }

    /// Bytes the model takes as Float32.
    public var byteCount: Int { parameterCount * 4 }

    /// The range of a tensor's elements in the flat buffer.
    public func range(of index: Int) -> Range<Int> { offsets[index]..<offsets[index] + tensors[index].count }

    /// Every tensor's range, in order.
    public var ranges: [Range<Int>] { tensors.indices.map { range(of: $0) } }
}

/// A model's parameters: a layout and one flat Float32 buffer.
public struct ModelParameters: Sendable, Equatable {
    public let layout: ModelLayout
    public var values: [Float]

    public init(layout: ModelLayout, values: [Float]) throws {
        guard values.count == layout.parameterCount else {
            throw ModelError("the layout has \(layout.parameterCount) parameters, \(values.count) values were given")
        }
        self.layout = layout
        self.values = values
    }

    /// All zeros.
    public init(zerosFor layout: ModelLayout) {
        self.layout = layout
        values = [Float](repeating: 0, count: layout.parameterCount)
    }

    /// The values of one tensor.
    public func tensor(named name: String) -> ArraySlice<Float>? {
        guard let index = layout.tensors.firstIndex(where: { $0.name == name }) else { return nil }
        return values[layout.range(of: index)]
    }
}

/// A model that does not fit its description.
public struct ModelError: Error, CustomStringConvertible, Sendable, Equatable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
