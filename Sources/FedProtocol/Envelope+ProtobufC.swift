import CProtobufC
import FedHashing
import FedProtoC
import FedWire
#if canImport(Glibc)
import Glibc
#endif

// Conversion between `Envelope` and the protobuf-c structs generated from proto/fedcoord.proto.
// Packing builds a C message that borrows Swift memory inside a scope; unpacking copies small
// fields into Swift values and frees the C tree, except for tensor chunks, whose bytes stay in the
// unpacked tree (owned by a ByteView) so that they are not copied again.

extension Envelope {
    /// Encodes this envelope as one frame (5-byte prefix + protobuf) into `buffer`, growing it
    /// when needed, and returns the frame's length.
    ///
    /// - Throws: ``WireError/Code/frameTooLarge`` if the envelope exceeds `maxFrameBytes`.
    public func encodeFrame(into buffer: inout [UInt8], maxFrameBytes: Int) throws -> Int {
        try withCEnvelope { message in
            let size = fedcoord__v1__envelope__get_packed_size(message)
            guard size <= maxFrameBytes else {
                throw WireError(.frameTooLarge, "an envelope of \(size) bytes exceeds the frame limit of \(maxFrameBytes) bytes")
            }
            let total = FrameHeader.size + size
            if buffer.count < total { buffer = [UInt8](repeating: 0, count: total) }
            return buffer.withUnsafeMutableBytes { raw in
                FrameHeader(length: UInt32(size)).write(into: raw)
                let packed = fedcoord__v1__envelope__pack(message, raw.baseAddress!.assumingMemoryBound(to: UInt8.self) + FrameHeader.size)
                precondition(packed == size, "protobuf-c packed \(packed) bytes, announced \(size)")
                return total
            }
        }
    }

    /// The envelope alone, protobuf-encoded (no frame prefix).
    public func serializedBytes() -> [UInt8] {
        withCEnvelope { message in
            let size = fedcoord__v1__envelope__get_packed_size(message)
            return [UInt8](unsafeUninitializedCapacity: size) { buffer, count in
                count = fedcoord__v1__envelope__pack(message, buffer.baseAddress)
            }
        }
    }

    /// Decodes one envelope.
    ///
    /// - Throws: ``WireError/Code/malformedFrame`` when the bytes are not a valid envelope.
    public init(decoding bytes: UnsafeRawBufferPointer) throws {
        guard let unpacked = fedcoord__v1__envelope__unpack(
            EnvelopeAllocator.pointer, bytes.count, bytes.baseAddress?.assumingMemoryBound(to: UInt8.self))
        else {
            throw WireError(.malformedFrame, "a frame of \(bytes.count) bytes is not a valid protobuf Envelope")
        }
        let tree = UnpackedEnvelope(unpacked)
        let e = unpacked.pointee
        self.init(callID: e.call_id)
        if let method = e.method, method.pointee != 0 { self.method = String(cString: method) }
        timeoutMs = e.timeout_ms
        for index in 0..<e.n_metadata {
            if let entry = e.metadata[index] {
                metadata[Self.string(entry.pointee.key)] = Self.string(entry.pointee.value)
            }
        }
        endOfStream = e.end_of_stream != 0
        cancel = e.cancel != 0
        if let status = e.status {
            self.status = RPCStatus(RPCStatus.Code(rawValue: status.pointee.code), Self.string(status.pointee.message))
        }
        body = try Self.decodeBody(e, tree: tree)
    }

    // MARK: Encoding

    func withCEnvelopePointer<R>(_ body: (UnsafePointer<Fedcoord__V1__Envelope>) throws -> R) rethrows -> R {
        try withCEnvelope(body)
    }

    private func withCEnvelope<R>(_ body: (UnsafePointer<Fedcoord__V1__Envelope>) throws -> R) rethrows -> R {
        let arena = CArena()
        var e = Fedcoord__V1__Envelope()
        fedcoord__v1__envelope__init(&e)
        e.call_id = callID
        if let method { e.method = arena.string(method) }
        e.timeout_ms = timeoutMs
        if !metadata.isEmpty {
            let entries: [UnsafeMutablePointer<Fedcoord__V1__MetadataEntry>?] = metadata.sorted { $0.key < $1.key }.map { key, value in
                var m = Fedcoord__V1__MetadataEntry()
                fedcoord__v1__metadata_entry__init(&m)
                m.key = arena.string(key)
                m.value = arena.string(value)
                return arena.box(m)
            }
            e.n_metadata = entries.count
            e.metadata = arena.copy(entries)
        }
        e.end_of_stream = endOfStream ? 1 : 0
        e.cancel = cancel ? 1 : 0
        if let status {
            var s = Fedcoord__V1__Status()
            fedcoord__v1__status__init(&s)
            s.code = status.code.rawValue
            s.message = arena.string(status.message)
            e.status = arena.box(s)
        }
        // A borrowed chunk must outlive the pack: keep its view alive across the body.
        var borrowed: ByteView?
        if let message = self.body {
            Self.fillBody(&e, message, arena, &borrowed)
        }
        return try withExtendedLifetime((arena, borrowed)) {
            try withUnsafePointer(to: &e) { try body($0) }
        }
    }

    private static func fillBody(_ e: inout Fedcoord__V1__Envelope, _ message: Message, _ arena: CArena, _ borrowed: inout ByteView?) {
        switch message {
        case .hello(let v):
            var m = Fedcoord__V1__Hello()
            fedcoord__v1__hello__init(&m)
            m.protocol_version = v.protocolVersion
            m.software_version = arena.string(v.softwareVersion)
            m.agent_name = arena.string(v.agentName)
            if let schema = v.schema { m.schema = arena.box(schemaSummary(schema, arena)) }
            e.body_case = FEDCOORD__V1__ENVELOPE__BODY_HELLO
            e.hello = arena.box(m)
        case .welcome(let v):
            var m = Fedcoord__V1__Welcome()
            fedcoord__v1__welcome__init(&m)
            m.protocol_version = v.protocolVersion
            m.software_version = arena.string(v.softwareVersion)
            m.agent_id = arena.string(v.agentID)
            m.federation = arena.string(v.federation)
            m.heartbeat_interval_ms = v.heartbeatIntervalMs
            m.model_schema_json = arena.string(v.modelSchemaJSON)
            e.body_case = FEDCOORD__V1__ENVELOPE__BODY_WELCOME
            e.welcome = arena.box(m)
        case .heartbeat(let v):
            var m = Fedcoord__V1__Heartbeat()
            fedcoord__v1__heartbeat__init(&m)
            m.sequence = v.sequence
            m.sent_unix_ms = v.sentUnixMs
            m.activity = arena.string(v.activity)
            e.body_case = FEDCOORD__V1__ENVELOPE__BODY_HEARTBEAT
            e.heartbeat = arena.box(m)
        case .trainTask(let v):
            var m = Fedcoord__V1__TrainTask()
            fedcoord__v1__train_task__init(&m)
            m.round_id = v.roundID
            m.model_version = v.modelVersion
            m.model_sha256 = arena.bytes(v.modelSHA256)
            m.local_epochs = v.localEpochs
            m.batch_size = v.batchSize
            m.learning_rate = v.learningRate
            m.proximal_mu = v.proximalMu
            m.deadline_unix_ms = v.deadlineUnixMs
            m.seed = v.seed
            m.tensor_count = v.tensorCount
            m.local_optimizer = arena.string(v.localOptimizer)
            m.momentum = v.momentum
            m.l2 = v.l2
            m.n_feature_means = v.featureMeans.count
            m.feature_means = arena.copy(v.featureMeans)
            m.n_feature_scales = v.featureScales.count
            m.feature_scales = arena.copy(v.featureScales)
            if let secure = v.secureAggregation { m.secure_aggregation = arena.box(SecAggCodec.parameters(secure, arena)) }
            m.log_seq = v.logSeq
            m.log_head_sha256 = arena.bytes(v.logHeadSHA256)
            e.body_case = FEDCOORD__V1__ENVELOPE__BODY_TRAIN_TASK
            e.train_task = arena.box(m)
        case .tensorHeader(let v):
            var m = Fedcoord__V1__TensorHeader()
            fedcoord__v1__tensor_header__init(&m)
            m.name = arena.string(v.name)
            m.n_shape = v.shape.count
            m.shape = arena.copy(v.shape)
            m.dtype = Fedcoord__V1__DType(rawValue: v.dtype.rawValue)
            m.total_bytes = v.totalBytes
            m.chunk_bytes = v.chunkBytes
            e.body_case = FEDCOORD__V1__ENVELOPE__BODY_TENSOR_HEADER
            e.tensor_header = arena.box(m)
        case .tensorChunk(let v):
            var m = Fedcoord__V1__TensorChunk()
            fedcoord__v1__tensor_chunk__init(&m)
            m.offset = v.offset
            borrowed = v.data
            v.data.withUnsafeBytes { bytes in
                // Borrowed, not copied: pack only reads it, and `borrowed` keeps it alive.
                m.data = ProtobufCBinaryData(
                    len: bytes.count, data: UnsafeMutablePointer(mutating: bytes.baseAddress?.assumingMemoryBound(to: UInt8.self)))
            }
            e.body_case = FEDCOORD__V1__ENVELOPE__BODY_TENSOR_CHUNK
            e.tensor_chunk = arena.box(m)
        case .tensorTrailer(let v):
            var m = Fedcoord__V1__TensorTrailer()
            fedcoord__v1__tensor_trailer__init(&m)
            m.crc32c = v.crc32c
            e.body_case = FEDCOORD__V1__ENVELOPE__BODY_TENSOR_TRAILER
            e.tensor_trailer = arena.box(m)
        case .updateReady(let v):
            var m = Fedcoord__V1__UpdateReady()
            fedcoord__v1__update_ready__init(&m)
            m.round_id = v.roundID
            m.model_version = v.modelVersion
            m.example_count = v.exampleCount
            m.update_bytes = v.updateBytes
            m.train_loss = v.trainLoss
            m.train_seconds = v.trainSeconds
            m.tensor_count = v.tensorCount
            m.failure = arena.string(v.failure)
            e.body_case = FEDCOORD__V1__ENVELOPE__BODY_UPDATE_READY
            e.update_ready = arena.box(m)
        case .fetchUpdate(let v):
            var m = Fedcoord__V1__FetchUpdate()
            fedcoord__v1__fetch_update__init(&m)
            m.round_id = v.roundID
            m.model_version = v.modelVersion
            e.body_case = FEDCOORD__V1__ENVELOPE__BODY_FETCH_UPDATE
            e.fetch_update = arena.box(m)
        case .cancelTask(let v):
            var m = Fedcoord__V1__CancelTask()
            fedcoord__v1__cancel_task__init(&m)
            m.round_id = v.roundID
            m.reason = arena.string(v.reason)
            e.body_case = FEDCOORD__V1__ENVELOPE__BODY_CANCEL_TASK
            e.cancel_task = arena.box(m)
        case .evaluationRequest(let v):
            var m = Fedcoord__V1__EvaluationRequest()
            fedcoord__v1__evaluation_request__init(&m)
            m.round_id = v.roundID
            m.model_version = v.modelVersion
            m.model_sha256 = arena.bytes(v.modelSHA256)
            m.tensor_count = v.tensorCount
            m.n_feature_means = v.featureMeans.count
            m.feature_means = arena.copy(v.featureMeans)
            m.n_feature_scales = v.featureScales.count
            m.feature_scales = arena.copy(v.featureScales)
            e.body_case = FEDCOORD__V1__ENVELOPE__BODY_EVALUATION_REQUEST
            e.evaluation_request = arena.box(m)
        case .evaluationResult(let v):
            var m = Fedcoord__V1__EvaluationResult()
            fedcoord__v1__evaluation_result__init(&m)
            m.round_id = v.roundID
            m.example_count = v.exampleCount
            m.loss = v.loss
            m.accuracy = v.accuracy
            m.roc_auc = v.rocAUC ?? 0
            m.has_roc_auc = v.rocAUC == nil ? 0 : 1
            e.body_case = FEDCOORD__V1__ENVELOPE__BODY_EVALUATION_RESULT
            e.evaluation_result = arena.box(m)
        case .dataReport(let v):
            var m = Fedcoord__V1__DataReport()
            fedcoord__v1__data_report__init(&m)
            m.summary = arena.box(schemaSummary(v.summary, arena))
            m.problem = arena.string(v.problem)
            e.body_case = FEDCOORD__V1__ENVELOPE__BODY_DATA_REPORT
            e.data_report = arena.box(m)
        case .statisticsRequest(let v):
            var m = Fedcoord__V1__StatisticsRequest()
            fedcoord__v1__statistics_request__init(&m)
            m.feature_count = v.featureCount
            if let secure = v.secureAggregation { m.secure_aggregation = arena.box(SecAggCodec.parameters(secure, arena)) }
            e.body_case = FEDCOORD__V1__ENVELOPE__BODY_STATISTICS_REQUEST
            e.statistics_request = arena.box(m)
        case .featureStatistics(let v):
            var m = Fedcoord__V1__FeatureStatistics()
            fedcoord__v1__feature_statistics__init(&m)
            m.n_counts = v.counts.count
            m.counts = arena.copy(v.counts)
            m.n_means = v.means.count
            m.means = arena.copy(v.means)
            m.n_m2 = v.m2.count
            m.m2 = arena.copy(v.m2)
            e.body_case = FEDCOORD__V1__ENVELOPE__BODY_FEATURE_STATISTICS
            e.feature_statistics = arena.box(m)
        case .advertiseKeys, .shareKeysRequest, .shareKeysResponse, .maskedInputRequest, .unmaskRequest, .unmaskResponse, .maskedVector:
            SecAggCodec.fill(&e, message, arena)
        case .empty:
            var m = Fedcoord__V1__Empty()
            fedcoord__v1__empty__init(&m)
            e.body_case = FEDCOORD__V1__ENVELOPE__BODY_EMPTY
            e.empty = arena.box(m)
        }
    }

    private static func schemaSummary(_ schema: DataSchemaSummary, _ arena: CArena) -> Fedcoord__V1__DataSchemaSummary {
        var s = Fedcoord__V1__DataSchemaSummary()
        fedcoord__v1__data_schema_summary__init(&s)
        let columns: [UnsafeMutablePointer<CChar>?] = schema.featureColumns.map { arena.string($0) }
        s.n_feature_columns = columns.count
        s.feature_columns = arena.copy(columns)
        s.label_column = arena.string(schema.labelColumn)
        s.row_count = schema.rowCount
        s.schema_sha256 = arena.bytes(schema.schemaSHA256)
        return s
    }

    // MARK: Decoding

    private static func schemaSummary(_ s: Fedcoord__V1__DataSchemaSummary) -> DataSchemaSummary {
        DataSchemaSummary(
            featureColumns: (0..<s.n_feature_columns).map { string(s.feature_columns[$0]) },
            labelColumn: string(s.label_column), rowCount: s.row_count, schemaSHA256: bytes(s.schema_sha256))
    }

    static func array<T>(_ pointer: UnsafeMutablePointer<T>?, _ count: Int) -> [T] {
        guard count > 0, let pointer else { return [] }
        return Array(UnsafeBufferPointer(start: pointer, count: count))
    }

    static func string(_ pointer: UnsafeMutablePointer<CChar>?) -> String {
        guard let pointer else { return "" }
        return String(cString: pointer)
    }

    static func bytes(_ data: ProtobufCBinaryData) -> [UInt8] {
        guard data.len > 0, let base = data.data else { return [] }
        return Array(UnsafeBufferPointer(start: base, count: data.len))
    }

    static func missing(_ what: String) -> WireError {
        WireError(.malformedFrame, "the envelope says it carries \(what) but the message is missing")
    }

    private static func decodeBody(_ e: Fedcoord__V1__Envelope, tree: UnpackedEnvelope) throws -> Message? {
        switch e.body_case {
        case FEDCOORD__V1__ENVELOPE__BODY__NOT_SET:
            return nil
        case FEDCOORD__V1__ENVELOPE__BODY_HELLO:
            guard let m = e.hello?.pointee else { throw missing("Hello") }
            var hello = Hello(protocolVersion: m.protocol_version, softwareVersion: string(m.software_version), agentName: string(m.agent_name))
            if let s = m.schema?.pointee { hello.schema = schemaSummary(s) }
            return .hello(hello)
        case FEDCOORD__V1__ENVELOPE__BODY_WELCOME:
            guard let m = e.welcome?.pointee else { throw missing("Welcome") }
            return .welcome(Welcome(
                protocolVersion: m.protocol_version, softwareVersion: string(m.software_version), agentID: string(m.agent_id),
                federation: string(m.federation), heartbeatIntervalMs: m.heartbeat_interval_ms,
                modelSchemaJSON: string(m.model_schema_json)))
        case FEDCOORD__V1__ENVELOPE__BODY_HEARTBEAT:
            guard let m = e.heartbeat?.pointee else { throw missing("Heartbeat") }
            return .heartbeat(Heartbeat(sequence: m.sequence, sentUnixMs: m.sent_unix_ms, activity: string(m.activity)))
        case FEDCOORD__V1__ENVELOPE__BODY_TRAIN_TASK:
            guard let m = e.train_task?.pointee else { throw missing("TrainTask") }
            var t = TrainTask()
            t.roundID = m.round_id
            t.modelVersion = m.model_version
            t.modelSHA256 = bytes(m.model_sha256)
            t.localEpochs = m.local_epochs
            t.batchSize = m.batch_size
            t.learningRate = m.learning_rate
            t.proximalMu = m.proximal_mu
            t.deadlineUnixMs = m.deadline_unix_ms
            t.seed = m.seed
            t.tensorCount = m.tensor_count
            t.localOptimizer = string(m.local_optimizer)
            t.momentum = m.momentum
            t.l2 = m.l2
            t.featureMeans = array(m.feature_means, m.n_feature_means)
            t.featureScales = array(m.feature_scales, m.n_feature_scales)
            if let secure = m.secure_aggregation?.pointee { t.secureAggregation = SecAggCodec.task(secure) }
            t.logSeq = m.log_seq
            t.logHeadSHA256 = bytes(m.log_head_sha256)
            guard t.logHeadSHA256.isEmpty || t.logHeadSHA256.count == 32 else {
                throw WireError(.malformedFrame, "TrainTask.log_head_sha256 holds \(t.logHeadSHA256.count) bytes; a SHA-256 has 32")
            }
            return .trainTask(t)
        case FEDCOORD__V1__ENVELOPE__BODY_TENSOR_HEADER:
            guard let m = e.tensor_header?.pointee else { throw missing("TensorHeader") }
            let shape = m.n_shape == 0 ? [] : Array(UnsafeBufferPointer(start: m.shape, count: m.n_shape))
            return .tensorHeader(TensorHeader(
                name: string(m.name), shape: shape, dtype: DType(rawValue: m.dtype.rawValue),
                totalBytes: m.total_bytes, chunkBytes: m.chunk_bytes))
        case FEDCOORD__V1__ENVELOPE__BODY_TENSOR_CHUNK:
            guard let m = e.tensor_chunk?.pointee else { throw missing("TensorChunk") }
            let raw = UnsafeRawBufferPointer(start: m.data.len == 0 ? nil : m.data.data, count: m.data.len)
            return .tensorChunk(TensorChunk(offset: m.offset, data: ByteView(bytes: raw, owner: tree)))
        case FEDCOORD__V1__ENVELOPE__BODY_TENSOR_TRAILER:
            guard let m = e.tensor_trailer?.pointee else { throw missing("TensorTrailer") }
            return .tensorTrailer(TensorTrailer(crc32c: m.crc32c))
        case FEDCOORD__V1__ENVELOPE__BODY_UPDATE_READY:
            guard let m = e.update_ready?.pointee else { throw missing("UpdateReady") }
            var u = UpdateReady()
            u.roundID = m.round_id
            u.modelVersion = m.model_version
            u.exampleCount = m.example_count
            u.updateBytes = m.update_bytes
            u.trainLoss = m.train_loss
            u.trainSeconds = m.train_seconds
            u.tensorCount = m.tensor_count
            u.failure = string(m.failure)
            return .updateReady(u)
        case FEDCOORD__V1__ENVELOPE__BODY_FETCH_UPDATE:
            guard let m = e.fetch_update?.pointee else { throw missing("FetchUpdate") }
            return .fetchUpdate(FetchUpdate(roundID: m.round_id, modelVersion: m.model_version))
        case FEDCOORD__V1__ENVELOPE__BODY_CANCEL_TASK:
            guard let m = e.cancel_task?.pointee else { throw missing("CancelTask") }
            return .cancelTask(CancelTask(roundID: m.round_id, reason: string(m.reason)))
        case FEDCOORD__V1__ENVELOPE__BODY_EVALUATION_REQUEST:
            guard let m = e.evaluation_request?.pointee else { throw missing("EvaluationRequest") }
            var r = EvaluationRequest()
            r.roundID = m.round_id
            r.modelVersion = m.model_version
            r.modelSHA256 = bytes(m.model_sha256)
            r.tensorCount = m.tensor_count
            r.featureMeans = array(m.feature_means, m.n_feature_means)
            r.featureScales = array(m.feature_scales, m.n_feature_scales)
            return .evaluationRequest(r)
        case FEDCOORD__V1__ENVELOPE__BODY_EVALUATION_RESULT:
            guard let m = e.evaluation_result?.pointee else { throw missing("EvaluationResult") }
            var r = EvaluationResult()
            r.roundID = m.round_id
            r.exampleCount = m.example_count
            r.loss = m.loss
            r.accuracy = m.accuracy
            r.rocAUC = m.has_roc_auc != 0 ? m.roc_auc : nil
            return .evaluationResult(r)
        case FEDCOORD__V1__ENVELOPE__BODY_EMPTY:
            return .empty
        case FEDCOORD__V1__ENVELOPE__BODY_DATA_REPORT:
            guard let m = e.data_report?.pointee else { throw missing("DataReport") }
            return .dataReport(DataReport(summary: m.summary.map { schemaSummary($0.pointee) } ?? DataSchemaSummary(), problem: string(m.problem)))
        case FEDCOORD__V1__ENVELOPE__BODY_STATISTICS_REQUEST:
            guard let m = e.statistics_request?.pointee else { throw missing("StatisticsRequest") }
            return .statisticsRequest(StatisticsRequest(featureCount: m.feature_count, secureAggregation: m.secure_aggregation.map { SecAggCodec.task($0.pointee) }))
        case FEDCOORD__V1__ENVELOPE__BODY_FEATURE_STATISTICS:
            guard let m = e.feature_statistics?.pointee else { throw missing("FeatureStatistics") }
            return .featureStatistics(FeatureStatisticsMessage(
                counts: array(m.counts, m.n_counts), means: array(m.means, m.n_means), m2: array(m.m2, m.n_m2)))
        default:
            if let message = try SecAggCodec.decode(e) { return message }
            throw WireError(.malformedFrame, "the envelope carries an unknown message (field \(e.body_case.rawValue))")
        }
    }
}

/// Owns an unpacked protobuf-c envelope tree and frees it exactly once.
final class UnpackedEnvelope: @unchecked Sendable {
    // @unchecked: the tree is only read after unpacking.
    private let pointer: UnsafeMutablePointer<Fedcoord__V1__Envelope>
    init(_ pointer: UnsafeMutablePointer<Fedcoord__V1__Envelope>) { self.pointer = pointer }
    deinit { fedcoord__v1__envelope__free_unpacked(pointer, EnvelopeAllocator.pointer) }
}
