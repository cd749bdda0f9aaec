import CurlShim
import Foundation

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

/// A small blocking HTTP client over libcurl's easy interface, for the CLI and the tests.
/// One instance reuses its connection across calls; it is not for concurrent use — make one per
/// thread. TLS is verified and redirects are not followed.
public final class HTTPClient {
    private let handle: UnsafeMutableRawPointer
    public var connectTimeout: Double
    public var timeout: Double

    private static let globalInit: Void = { curl_global_init(Int(CURL_GLOBAL_DEFAULT)) }()

    public init(connectTimeout: Double = 5, timeout: Double = 30) {
        _ = Self.globalInit
        handle = curl_easy_init()
        self.connectTimeout = connectTimeout
        self.timeout = timeout
    }

    deinit { curl_easy_cleanup(handle) }

    /// Collects data and headers from libcurl's callbacks; reached through the userdata pointer
    /// because C callbacks cannot capture.
    final class Sink {
        var body: [UInt8] = []
        var headers: [(name: String, value: String)] = []
        var onData: (([UInt8]) -> Bool)?
    }

    public func send(method: String, url: String, headers: [String: String] = [:], body: [UInt8]? = nil) throws -> HTTPResult {
        try perform(method: method, url: url, headers: headers, body: body, onData: nil, totalTimeout: timeout)
    }

    /// Streams the response body to `onData` as it arrives; return false to stop. No total
    /// timeout: streams are long-lived.
    public func stream(url: String, headers: [String: String] = [:], onData: @escaping ([UInt8]) -> Bool) throws -> HTTPResult {
        try perform(method: "GET", url: url, headers: headers, body: nil, onData: onData, totalTimeout: 0)
    }

    private func perform(method: String, url: String, headers: [String: String], body: [UInt8]?, onData: (([UInt8]) -> Bool)?, totalTimeout: Double) throws -> HTTPResult {
        curl_easy_reset(handle)
        let sink = Sink()
        sink.onData = onData
        let sinkPointer = Unmanaged.passUnretained(sink).toOpaque()
        var list: UnsafeMutablePointer<curl_slist>?
        defer { curl_slist_free_all(list) }
        for (name, value) in headers { list = curl_slist_append(list, "\(name): \(value)") }
        // No "Expect: 100-continue" round trip on larger bodies.
        list = curl_slist_append(list, "Expect:")

        gh_easy_setopt_string(handle, CURLOPT_URL, url)
        gh_easy_setopt_long(handle, CURLOPT_NOSIGNAL, 1)
        gh_easy_setopt_long(handle, CURLOPT_FOLLOWLOCATION, 0)
        gh_easy_setopt_long(handle, CURLOPT_SSL_VERIFYPEER, 1)
        gh_easy_setopt_long(handle, CURLOPT_SSL_VERIFYHOST, 2)
        gh_easy_setopt_long(handle, CURLOPT_CONNECTTIMEOUT_MS, Int(connectTimeout * 1000))
        gh_easy_setopt_long(handle, CURLOPT_TIMEOUT_MS, Int(totalTimeout * 1000))
        gh_easy_setopt_long(handle, CURLOPT_TCP_NODELAY, 1)
        gh_easy_setopt_string(handle, CURLOPT_USERAGENT, "gatehouse-cli/1")
        gh_easy_setopt_string(handle, CURLOPT_CUSTOMREQUEST, method)
        if method == "HEAD" { gh_easy_setopt_long(handle, CURLOPT_NOBODY, 1) }
        if let body {
            gh_easy_setopt_long(handle, CURLOPT_POSTFIELDSIZE_LARGE, body.count)
            body.withUnsafeBufferPointer { buffer in
                // COPYPOSTFIELDS copies: the buffer need not outlive this call.
                _ = gh_easy_setopt_pointer(handle, CURLOPT_COPYPOSTFIELDS, UnsafeMutableRawPointer(mutating: buffer.baseAddress ?? UnsafePointer(bitPattern: 1)!))
            }
        }
        gh_easy_setopt_slist(handle, CURLOPT_HTTPHEADER, list)
        gh_easy_setopt_write_function(handle) { data, size, count, user in
            let sink = Unmanaged<Sink>.fromOpaque(user!).takeUnretainedValue()
            let bytes = Array(UnsafeRawBufferPointer(start: data, count: size * count))
            if let onData = sink.onData {
                return onData(bytes) ? size * count : 0
            }
            sink.body.append(contentsOf: bytes)
            return size * count
        }
        gh_easy_setopt_pointer(handle, CURLOPT_WRITEDATA, sinkPointer)
        gh_easy_setopt_header_function(handle) { data, size, count, user in
            let sink = Unmanaged<Sink>.fromOpaque(user!).takeUnretainedValue()
            let line = String(decoding: UnsafeRawBufferPointer(start: data, count: size * count), as: UTF8.self)
            if line.hasPrefix("HTTP/") { sink.headers.removeAll() }
            if let colon = line.firstIndex(of: ":") {
                sink.headers.append((String(line[..<colon]), line[line.index(after: colon)...].trimmingCharacters(in: .whitespacesAndNewlines)))
            }
            return size * count
        }
        gh_easy_setopt_pointer(handle, CURLOPT_HEADERDATA, sinkPointer)

        let code = withExtendedLifetime(sink) { curl_easy_perform(handle) }
        var status = 0
        gh_easy_getinfo_long(handle, CURLINFO_RESPONSE_CODE, &status)
        // A stream the caller stopped on purpose ends with a write error; that is success.
        if code != CURLE_OK && !(code == CURLE_WRITE_ERROR && onData != nil) {
            let message = String(cString: curl_easy_strerror(code))
            throw HTTPClientError.transport(code: Int(code.rawValue), message: "\(message) (\(url))")
        }
        return HTTPResult(status: status, headers: sink.headers, body: sink.body)
    }
}
