import Foundation
import GatehouseClient
import GatehouseCore
import GatehouseDelivery
import GatehouseServer
import GatehouseStore
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import Testing

/// A server built by the composition root (`GatehouseServer.buildApplication`) and run in this
/// process by HummingbirdTesting on a real loopback socket: the routes, the dispatcher and the
/// gate timers as `serve` runs them, without starting a process. Process tests remain for what
/// needs one (kill -9, signals, the CLI's exit codes).
struct InProcessServer: Sendable {
    let client: any TestClientProtocol
    /// The server's database and dispatcher, for tests that look inside.
    let database: any StoreDatabase
    let dispatcher: Dispatcher?

    /// Builds the server for `yaml` (a gatehouse.yml; the database goes in a fresh temporary
    /// folder, the address is 127.0.0.1 on a free port), runs `test` against it, then shuts it
    /// down.
    static func with<T: Sendable>(
        _ yaml: String = "", configure: (inout GatehouseConfig) -> Void = { _ in },
        _ test: @Sendable (InProcessServer) async throws -> T
    ) async throws -> T {
        let dir = TempDir()
        let loaded = ConfigLoader(environment: [:]).load(yaml: yaml)
        guard loaded.issues.isEmpty else { throw InProcessError("config: \(loaded.issues.map(\.message))") }
        var config = loaded.config
        config.storage.sqlite = testDatabase(dir)
        config.server.address = "127.0.0.1:0"
        configure(&config)
        var logger = Logger(label: "gatehouse-test")
        logger.logLevel = .warning
        let app = try await GatehouseServer.buildApplication(config: config, logger: logger, registry: nil)
        let (database, dispatcher) = (app.database, app.dispatcher)
        // The folder (and the database in it) must outlive the server.
        defer { withExtendedLifetime(dir) {} }
        return try await app.withServices.test(.live) { client in
            try await test(InProcessServer(client: client, database: database, dispatcher: dispatcher))
        }
    }

    func request(
        _ method: HTTPRequest.Method, _ path: String, body: String? = nil, contentType: String? = "application/json",
        headers: [String: String] = [:], token: String? = nil
    ) async throws -> HTTPResult {
        var fields = HTTPFields()
        if let contentType, body != nil { fields[.contentType] = contentType }
        if let token { fields[.authorization] = "Bearer \(token)" }
        for (name, value) in headers { fields[HTTPField.Name(name)!] = value }
        let response = try await client.executeRequest(uri: path, method: method, headers: fields, body: body.map { ByteBuffer(string: $0) })
        return HTTPResult(
            status: Int(response.status.code), headers: response.headers.map { ($0.name.canonicalName, $0.value) },
            body: Array(response.body.readableBytesView))
    }

    func post(_ path: String, _ body: String, contentType: String = "application/json", headers: [String: String] = [:], token: String? = nil) async throws -> HTTPResult {
        try await request(.post, path, body: body, contentType: contentType, headers: headers, token: token)
    }

    func get(_ path: String, token: String? = nil) async throws -> HTTPResult {
        try await request(.get, path, token: token)
    }

    func json(_ path: String, token: String? = nil) async throws -> JSONObject {
        let result = try await get(path, token: token)
        #expect(result.status == 200, "GET \(path) → \(result.status) \(result.text)")
        return result.json
    }

    /// Every event, page by page.
    func allEvents(_ query: String = "") async throws -> [JSONObject] {
        var events: [JSONObject] = []
        var after = "0"
        while true {
            let page = try await json("/v1/events?limit=1000&after=\(after)" + (query.isEmpty ? "" : "&" + query))
            events += page["events"]?.arrayValue?.compactMap(\.objectValue) ?? []
            guard case .string(let next)? = page["next"] else { return events }
            after = next
        }
    }
}

struct InProcessError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
