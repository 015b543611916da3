import COpenSSL

/// An OpenSSL `SSL_CTX` configured for FedCoord: TLS 1.3 only, mutual authentication, the
/// federation CA as the only trust anchor, and (on the server) the CRL checked.
///
/// Creating one performs blocking disk I/O (certificates, key, CA, CRL) and is comparatively
/// expensive; build it once and share it across connections. To pick up a new CRL, build a new
/// context and hand it to the listener (``WireListener/reloadRevocationList()``).
public final class TLSContext: @unchecked Sendable {
    // @unchecked: the SSL_CTX is fully configured in init and never mutated afterwards; OpenSSL 3
    // makes sharing a configured SSL_CTX across threads safe.
    let pointer: OpaquePointer  // SSL_CTX
    public let configuration: TLSConfiguration
    /// How many certificates the loaded CRL revokes (for logging).
    public let revokedSerialCount: Int

    /// Loads the configuration's files and builds the context.
    ///
    /// - Throws: ``WireError/Code/configuration`` naming the file and OpenSSL's reason.
    public convenience init(configuration: TLSConfiguration) throws {
        try self.init(configuration: configuration, presentsCertificate: true)
    }

    /// Tests only: a client limited to an older TLS version, to check that the server refuses it.
    convenience init(configuration: TLSConfiguration, maximumProtocolVersionForTesting version: Int32) throws {
        try self.init(configuration: configuration, presentsCertificate: true, minimumVersion: TLS1_VERSION, maximumVersion: version)
    }

    /// `presentsCertificate: false` builds a client that offers no certificate: only tests use it,
    /// to check that the coordinator refuses such a client.
    init(
        configuration: TLSConfiguration, presentsCertificate: Bool,
        minimumVersion: Int32 = TLS1_3_VERSION, maximumVersion: Int32 = TLS1_3_VERSION
    ) throws {
        try configuration.validateFiles()
        ERR_clear_error()
        let method = configuration.role == .server ? TLS_server_method() : TLS_client_method()
        guard let ctx = SSL_CTX_new(method) else {
            throw WireError(.configuration, "SSL_CTX_new failed: \(OpenSSLErrorStack.describe(fallback: "unknown"))")
        }
        self.pointer = ctx
        self.configuration = configuration
        var revoked = 0
        do {
            func check(_ ok: Bool, _ what: String) throws {
                if !ok {
                    throw WireError(.configuration, "\(what): \(OpenSSLErrorStack.describe(fallback: "unknown reason"))")
                }
            }
            try check(shim_SSL_CTX_set_min_proto_version(ctx, minimumVersion) == 1, "cannot require TLS 1.3")
            try check(shim_SSL_CTX_set_max_proto_version(ctx, maximumVersion) == 1, "cannot require TLS 1.3")
            SSL_CTX_set_options(ctx, UInt64(shim_SSL_OP_NO_RENEGOTIATION() | shim_SSL_OP_NO_TICKET()))
            _ = shim_SSL_CTX_set_mode(
                ctx, Int(SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER))
            // Read many records per read(2): halves the syscalls on bulk transfers.
            shim_SSL_CTX_set_read_ahead(ctx, 1)
            SSL_CTX_set_default_read_buffer_len(ctx, 64 * 1024)
            _ = SSL_CTX_set_num_tickets(ctx, 0)
            _ = shim_SSL_CTX_set_session_cache_off(ctx)
            if presentsCertificate {
                try check(
                    SSL_CTX_use_certificate_chain_file(ctx, configuration.certificateChainPath) == 1,
                    "cannot load the certificate '\(configuration.certificateChainPath)'")
                try check(
                    SSL_CTX_use_PrivateKey_file(ctx, configuration.privateKeyPath, SSL_FILETYPE_PEM) == 1,
                    "cannot load the private key '\(configuration.privateKeyPath)'")
                try check(
                    SSL_CTX_check_private_key(ctx) == 1,
                    "the private key '\(configuration.privateKeyPath)' does not match the certificate "
                        + "'\(configuration.certificateChainPath)'")
            }
            // The federation CA only; never SSL_CTX_set_default_verify_paths.
            try check(
                SSL_CTX_load_verify_locations(ctx, configuration.trustRootPath, nil) == 1,
                "cannot load the CA certificate '\(configuration.trustRootPath)'")
            if configuration.role == .server {
                SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nil)
                if let names = SSL_load_client_CA_file(configuration.trustRootPath) {
                    SSL_CTX_set_client_CA_list(ctx, names)
                }
            } else {
                SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nil)
            }
            if let crlPath = configuration.revocationListPath {
                let store = SSL_CTX_get_cert_store(ctx)
                let lookup = X509_STORE_add_lookup(store, X509_LOOKUP_file())
                let loaded = X509_load_crl_file(lookup, crlPath, X509_FILETYPE_PEM)
                try check(loaded >= 1, "cannot load the certificate revocation list '\(crlPath)'")
                X509_STORE_set_flags(store, UInt(X509_V_FLAG_CRL_CHECK))
                revoked = (try? RevocationList(pemFile: crlPath).revokedSerials.count) ?? 0
            }
        } catch {
            SSL_CTX_free(ctx)
            throw error
        }
        self.revokedSerialCount = revoked
    }

    deinit { SSL_CTX_free(pointer) }
}
