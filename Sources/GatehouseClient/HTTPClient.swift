import CurlShim
import Foundation
import GatehouseHTTP

public struct HTTPResult: Sendable {
    public var status: Int
    public var headers: [(name: String, value: String)]
    public var body: [UInt8]

    public init(status: Int, headers: [(name: String, value: String)], body: [UInt8]) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    public var text: String { String(decoding: body, as: UTF8.self) }
    public func header(_ name: String) -> String? {
        headers.last { $0.name.caseInsensitiveCompare(name) == .orderedSame }?.value
    }
}

public enum HTTPClientError: Error, CustomStringConvertible, Sendable {
    /// The server could not be reached or the transfer failed (libcurl's message).
    case transport(code: Int, message: String)
    public var description: String {
        switch self {
        case .transport(_, let message): return message
        }
    }
}

/// A small blocking HTTP client over libcurl's easy interface (through `GatehouseHTTP`, the
/// layer the dispatcher's client shares), for the CLI and the tests. One instance reuses its
/// connection across calls; it is not for concurrent use — make one per thread. TLS is
/// verified and redirects are not followed.
public final class HTTPClient {
    private let handle: UnsafeMutableRawPointer
    public var connectTimeout: Double
    public var timeout: Double

    public init(connectTimeout: Double = 5, timeout: Double = 30) {
        Curl.initialize()
        handle = curl_easy_init()
        self.connectTimeout = connectTimeout
        self.timeout = timeout
    }

    deinit { curl_easy_cleanup(handle) }

    public func send(method: String, url: String, headers: [String: String] = [:], body: [UInt8]? = nil) throws -> HTTPResult {
        try perform(method: method, url: url, headers: headers, body: body, onData: nil, totalTimeout: timeout)
    }

    /// Streams the response body to `onData` as it arrives; return false to stop. No total
    /// timeout: streams are long-lived.
    public func stream(url: String, headers: [String: String] = [:], onData: @escaping ([UInt8]) -> Bool) throws -> HTTPResult {
        try perform(method: "GET", url: url, headers: headers, body: nil, onData: onData, totalTimeout: 0)
    }

    private func perform(method: String, url: String, headers: [String: String], body: [UInt8]?, onData: (([UInt8]) -> Bool)?, totalTimeout: Double) throws -> HTTPResult {
        let list = Curl.prepare(
            handle, method: method, url: url, headers: headers.map { ($0.key, $0.value) }, body: body,
            connectTimeout: connectTimeout, timeout: totalTimeout, userAgent: "gatehouse-cli/1")
        defer { curl_slist_free_all(list) }
        let collector = ResponseCollector(onData: onData)
        collector.attach(to: handle)
        let code = withExtendedLifetime(collector) { curl_easy_perform(handle) }
        // A stream the caller stopped on purpose ends with a write error; that is success.
        if code != CURLE_OK && !(code == CURLE_WRITE_ERROR && onData != nil) {
            throw HTTPClientError.transport(code: Int(code.rawValue), message: "\(Curl.message(code)) (\(url))")
        }
        return HTTPResult(status: Curl.status(handle), headers: collector.headers, body: collector.body)
    }
}
