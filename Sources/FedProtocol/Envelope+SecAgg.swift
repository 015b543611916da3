import CProtobufC
import FedHashing
import FedProtoC
import FedSecAgg
import FedWire

/// Conversion of the FLSECAGG-v1 stage messages between Swift values and protobuf-c structs
/// (the rest of the envelope is in Envelope+ProtobufC.swift).
enum SecAggCodec {
    typealias E = Envelope

    // MARK: Encoding

    static func parameters(_ task: SecureAggregationTask, _ arena: CArena) -> Fedcoord__V1__SecAggParameters {
        let c = task.config
        var m = Fedcoord__V1__SecAggParameters()
        fedcoord__v1__sec_agg_parameters__init(&m)
        m.protocol_version = SecAggConfig.protocolVersion
        m.round_id = c.roundID
        m.session_nonce = arena.bytes(c.sessionNonce)
        let roster: [UnsafeMutablePointer<CChar>?] = c.roster.map { arena.string($0) }
        m.n_roster = roster.count
        m.roster = arena.copy(roster)
        m.neighbor_degree = c.neighborDegree
        m.threshold = c.threshold
        m.min_survivors = c.minSurvivors
        m.graph_seed = arena.bytes(c.graphSeed)
        m.vector_length = c.vectorLength
        m.scale_exponent = c.scaleExponent
        m.clip = c.clip
        m.max_weight = c.maxWeight
        m.model_sha256 = arena.bytes(c.modelSHA256)
        if let dp = c.dp {
            m.dp_mode = UInt32(dp.mode)
            m.dp_local_stddev = dp.localStddev
            m.dp_l2_clip = dp.l2Clip
        }
        m.n_stage_timeout_ms = c.stageTimeoutsMs.count
        m.stage_timeout_ms = arena.copy(c.stageTimeoutsMs)
        m.your_index = task.index
        m.dp_projected_epsilon = task.projectedEpsilon ?? 0
        m.dp_delta = task.delta ?? 0
        return m
    }

    static func keys(_ roundID: UInt64, _ k: AdvertisedKeys, _ arena: CArena) -> UnsafeMutablePointer<Fedcoord__V1__AdvertiseKeys> {
        var m = Fedcoord__V1__AdvertiseKeys()
        fedcoord__v1__advertise_keys__init(&m)
        m.round_id = roundID
        m.index = k.index
        m.c_pk = arena.bytes(k.encryptionKey)
        m.s_pk = arena.bytes(k.maskingKey)
        return arena.box(m)
    }

    static func shares(_ list: [EncryptedShare], _ arena: CArena) -> (Int, UnsafeMutablePointer<UnsafeMutablePointer<Fedcoord__V1__EncryptedShare>?>?) {
        let boxes: [UnsafeMutablePointer<Fedcoord__V1__EncryptedShare>?] = list.map { share in
            var m = Fedcoord__V1__EncryptedShare()
            fedcoord__v1__encrypted_share__init(&m)
            m.peer_index = share.peer
            m.ciphertext = arena.bytes(share.ciphertext)
            return arena.box(m)
        }
        return (boxes.count, arena.copy(boxes))
    }

    static func fill(_ e: inout Fedcoord__V1__Envelope, _ message: Message, _ arena: CArena) {
        switch message {
        case .advertiseKeys(let v):
            e.body_case = FEDCOORD__V1__ENVELOPE__BODY_ADVERTISE_KEYS
            e.advertise_keys = keys(v.roundID, v.keys, arena)
        case .shareKeysRequest(let v):
            var m = Fedcoord__V1__ShareKeysRequest()
            fedcoord__v1__share_keys_request__init(&m)
            m.round_id = v.roundID
            let list: [UnsafeMutablePointer<Fedcoord__V1__AdvertiseKeys>?] = v.keys.map { keys(v.roundID, $0, arena) }
            m.n_u1_keys = list.count
            m.u1_keys = arena.copy(list)
            e.body_case = FEDCOORD__V1__ENVELOPE__BODY_SHARE_KEYS_REQUEST
            e.share_keys_request = arena.box(m)
        case .shareKeysResponse(let v):
            var m = Fedcoord__V1__ShareKeysResponse()
            fedcoord__v1__share_keys_response__init(&m)
            m.round_id = v.roundID
            m.index = v.index
            m.b_commitment = arena.bytes(v.commitment)
            (m.n_outgoing, m.outgoing) = shares(v.outgoing, arena)
            e.body_case = FEDCOORD__V1__ENVELOPE__BODY_SHARE_KEYS_RESPONSE
            e.share_keys_response = arena.box(m)
        case .maskedInputRequest(let v):
            var m = Fedcoord__V1__MaskedInputRequest()
            fedcoord__v1__masked_input_request__init(&m)
            m.round_id = v.roundID
            m.n_u2 = v.survivors.count
            m.u2 = arena.copy(v.survivors)
            (m.n_incoming, m.incoming) = shares(v.incoming, arena)
            e.body_case = FEDCOORD__V1__ENVELOPE__BODY_MASKED_INPUT_REQUEST
            e.masked_input_request = arena.box(m)
        case .unmaskRequest(let v):
            var m = Fedcoord__V1__UnmaskRequest()
            fedcoord__v1__unmask_request__init(&m)
            m.round_id = v.roundID
            m.n_survivors = v.survivors.count
            m.survivors = arena.copy(v.survivors)
            m.n_dropped = v.dropped.count
            m.dropped = arena.copy(v.dropped)
            e.body_case = FEDCOORD__V1__ENVELOPE__BODY_UNMASK_REQUEST
            e.unmask_request = arena.box(m)
        case .unmaskResponse(let v):
            var m = Fedcoord__V1__UnmaskResponse()
            fedcoord__v1__unmask_response__init(&m)
            m.round_id = v.roundID
            m.index = v.index
            let list: [UnsafeMutablePointer<Fedcoord__V1__RevealedShare>?] = v.shares.map { share in
                var r = Fedcoord__V1__RevealedShare()
                fedcoord__v1__revealed_share__init(&r)
                r.owner_index = share.owner
                r.masking_key = share.kind == .maskingKey ? 1 : 0
                r.share = arena.bytes(share.share)
                return arena.box(r)
            }
            m.n_shares = list.count
            m.shares = arena.copy(list)
            e.body_case = FEDCOORD__V1__ENVELOPE__BODY_UNMASK_RESPONSE
            e.unmask_response = arena.box(m)
        case .maskedVector(let v):
            var m = Fedcoord__V1__MaskedVector()
            fedcoord__v1__masked_vector__init(&m)
            m.round_id = v.roundID
            m.n_elements = v.elements.count
            m.elements = arena.copy(v.elements)
            e.body_case = FEDCOORD__V1__ENVELOPE__BODY_MASKED_VECTOR
            e.masked_vector = arena.box(m)
        default:
            preconditionFailure("not a secure-aggregation message")
        }
    }

    // MARK: Decoding

    static func task(_ m: Fedcoord__V1__SecAggParameters) -> SecureAggregationTask {
        let dp: SecAggConfig.DifferentialPrivacy? = m.dp_mode == 0 ? nil
            : .init(mode: UInt8(truncatingIfNeeded: m.dp_mode), localStddev: m.dp_local_stddev, l2Clip: m.dp_l2_clip)
        let config = SecAggConfig(
            roundID: m.round_id, sessionNonce: E.bytes(m.session_nonce), roster: (0..<m.n_roster).map { E.string(m.roster[$0]) },
            neighborDegree: m.neighbor_degree, threshold: m.threshold, minSurvivors: m.min_survivors, graphSeed: E.bytes(m.graph_seed),
            vectorLength: m.vector_length, scaleExponent: m.scale_exponent, clip: m.clip, maxWeight: m.max_weight,
            modelSHA256: E.bytes(m.model_sha256), dp: dp, stageTimeoutsMs: E.array(m.stage_timeout_ms, m.n_stage_timeout_ms))
        return SecureAggregationTask(config: config, index: m.your_index, projectedEpsilon: m.dp_delta > 0 ? m.dp_projected_epsilon : nil,
                                     delta: m.dp_delta > 0 ? m.dp_delta : nil)
    }

    static func keys(_ m: Fedcoord__V1__AdvertiseKeys) -> AdvertisedKeys {
        AdvertisedKeys(index: m.index, encryptionKey: E.bytes(m.c_pk), maskingKey: E.bytes(m.s_pk))
    }

    static func shares(_ count: Int, _ list: UnsafeMutablePointer<UnsafeMutablePointer<Fedcoord__V1__EncryptedShare>?>?) -> [EncryptedShare] {
        (0..<count).compactMap { list?[$0]?.pointee }.map { EncryptedShare(peer: $0.peer_index, ciphertext: E.bytes($0.ciphertext)) }
    }

    static func decode(_ e: Fedcoord__V1__Envelope) throws -> Message? {
        switch e.body_case {
        case FEDCOORD__V1__ENVELOPE__BODY_ADVERTISE_KEYS:
            guard let m = e.advertise_keys?.pointee else { throw E.missing("AdvertiseKeys") }
            return .advertiseKeys(AdvertiseKeysMessage(roundID: m.round_id, keys: keys(m)))
        case FEDCOORD__V1__ENVELOPE__BODY_SHARE_KEYS_REQUEST:
            guard let m = e.share_keys_request?.pointee else { throw E.missing("ShareKeysRequest") }
            return .shareKeysRequest(ShareKeysRequest(roundID: m.round_id, keys: (0..<m.n_u1_keys).compactMap { m.u1_keys[$0]?.pointee }.map(keys)))
        case FEDCOORD__V1__ENVELOPE__BODY_SHARE_KEYS_RESPONSE:
            guard let m = e.share_keys_response?.pointee else { throw E.missing("ShareKeysResponse") }
            return .shareKeysResponse(ShareKeysResponse(
                roundID: m.round_id, index: m.index, commitment: E.bytes(m.b_commitment), outgoing: shares(m.n_outgoing, m.outgoing)))
        case FEDCOORD__V1__ENVELOPE__BODY_MASKED_INPUT_REQUEST:
            guard let m = e.masked_input_request?.pointee else { throw E.missing("MaskedInputRequest") }
            return .maskedInputRequest(MaskedInputRequest(
                roundID: m.round_id, survivors: E.array(m.u2, m.n_u2), incoming: shares(m.n_incoming, m.incoming)))
        case FEDCOORD__V1__ENVELOPE__BODY_UNMASK_REQUEST:
            guard let m = e.unmask_request?.pointee else { throw E.missing("UnmaskRequest") }
            return .unmaskRequest(UnmaskRequest(roundID: m.round_id, survivors: E.array(m.survivors, m.n_survivors), dropped: E.array(m.dropped, m.n_dropped)))
        case FEDCOORD__V1__ENVELOPE__BODY_UNMASK_RESPONSE:
            guard let m = e.unmask_response?.pointee else { throw E.missing("UnmaskResponse") }
            let list = (0..<m.n_shares).compactMap { m.shares[$0]?.pointee }.map {
                RevealedShare(owner: $0.owner_index, kind: $0.masking_key != 0 ? .maskingKey : .selfMask, share: E.bytes($0.share))
            }
            return .unmaskResponse(UnmaskResponse(roundID: m.round_id, index: m.index, shares: list))
        case FEDCOORD__V1__ENVELOPE__BODY_MASKED_VECTOR:
            guard let m = e.masked_vector?.pointee else { throw E.missing("MaskedVector") }
            return .maskedVector(MaskedVector(roundID: m.round_id, elements: E.array(m.elements, m.n_elements)))
        default:
            return nil
        }
    }
}
