import CurlShim
import GatehouseCore

/// The one libcurl layer: what every Gatehouse request sets on an easy handle, and how a
/// response is collected from libcurl's callbacks. The CLI's blocking `HTTPClient` and the
/// dispatcher's `CurlMultiClient` both build on it, so TLS verification, timeouts, redirects
/// and header parsing behave the same everywhere.
public enum Curl {
    private static let globalInit: Void = { curl_global_init(Int(CURL_GLOBAL_DEFAULT)) }()

    /// libcurl's global state, once per process, before the first handle.
    public static func initialize() { _ = globalInit }

    /// Sets up a (reset) easy handle for one request. TLS is verified, redirects are never
    /// followed, only http(s) is spoken, and there is no `Expect: 100-continue` round trip.
    /// `timeout` 0 means none (streams). Returns the header list: free it with
    /// `curl_slist_free_all` once the transfer is over.
    public static func prepare(
        _ handle: UnsafeMutableRawPointer, method: String, url: String, headers: [(String, String)], body: [UInt8]?,
        connectTimeout: Double, timeout: Double, userAgent: String? = nil
    ) -> UnsafeMutablePointer<curl_slist>? {
        curl_easy_reset(handle)
        gh_easy_setopt_string(handle, CURLOPT_URL, url)
        gh_easy_setopt_long(handle, CURLOPT_NOSIGNAL, 1)
        gh_easy_setopt_long(handle, CURLOPT_FOLLOWLOCATION, 0)
        gh_easy_setopt_long(handle, CURLOPT_SSL_VERIFYPEER, 1)
        gh_easy_setopt_long(handle, CURLOPT_SSL_VERIFYHOST, 2)
        gh_easy_setopt_long(handle, CURLOPT_TCP_NODELAY, 1)
        gh_easy_setopt_string(handle, CURLOPT_PROTOCOLS_STR, "http,https")
        gh_easy_setopt_long(handle, CURLOPT_CONNECTTIMEOUT_MS, Int(connectTimeout * 1000))
        gh_easy_setopt_long(handle, CURLOPT_TIMEOUT_MS, Int(timeout * 1000))
        if let userAgent { gh_easy_setopt_string(handle, CURLOPT_USERAGENT, userAgent) }
        gh_easy_setopt_string(handle, CURLOPT_CUSTOMREQUEST, method)
        if method == "HEAD" { gh_easy_setopt_long(handle, CURLOPT_NOBODY, 1) }
        var list: UnsafeMutablePointer<curl_slist>?
        for (name, value) in headers { list = curl_slist_append(list, "\(name): \(value)") }
        list = curl_slist_append(list, "Expect:")
        gh_easy_setopt_slist(handle, CURLOPT_HTTPHEADER, list)
        if let body {
            gh_easy_setopt_long(handle, CURLOPT_POSTFIELDSIZE_LARGE, body.count)
            body.withUnsafeBufferPointer { buffer in
                // COPYPOSTFIELDS copies: the buffer need not outlive this call.
                _ = gh_easy_setopt_pointer(handle, CURLOPT_COPYPOSTFIELDS, UnsafeMutableRawPointer(mutating: buffer.baseAddress ?? UnsafePointer(bitPattern: 1)!))
            }
        }
        return list
    }

    /// The HTTP status of a finished transfer (0 without a response).
    public static func status(_ handle: UnsafeMutableRawPointer) -> Int {
        var status = 0
        gh_easy_getinfo_long(handle, CURLINFO_RESPONSE_CODE, &status)
        return status
    }

    public static func message(_ code: CURLcode) -> String { String(cString: curl_easy_strerror(code)) }
}

/// Collects a response's headers and body from libcurl's callbacks (reached through the
/// userdata pointer: C callbacks cannot capture). Keep it alive until the transfer is over.
public final class ResponseCollector {
    public private(set) var body: [UInt8] = []
    public private(set) var headers: [(name: String, value: String)] = []
    /// The body is kept up to this size; the rest is read and dropped.
    let limit: Int
    /// Streams the body instead of keeping it; false stops the transfer.
    let onData: (([UInt8]) -> Bool)?

    public init(limit: Int = .max, onData: (([UInt8]) -> Bool)? = nil) {
        self.limit = limit
        self.onData = onData
    }

    /// Points the handle's write and header callbacks at this collector.
    public func attach(to handle: UnsafeMutableRawPointer) {
        let me = Unmanaged.passUnretained(self).toOpaque()
        gh_easy_setopt_write_function(handle) { data, size, count, user in
            let collector = Unmanaged<ResponseCollector>.fromOpaque(user!).takeUnretainedValue()
            let n = size * count
            if let onData = collector.onData {
                return onData(Array(UnsafeRawBufferPointer(start: data, count: n))) ? n : 0
            }
            let keep = min(n, max(0, collector.limit - collector.body.count))
            if keep > 0 { collector.body.append(contentsOf: UnsafeRawBufferPointer(start: data, count: keep)) }
            return n
        }
        gh_easy_setopt_pointer(handle, CURLOPT_WRITEDATA, me)
        gh_easy_setopt_header_function(handle) { data, size, count, user in
            let collector = Unmanaged<ResponseCollector>.fromOpaque(user!).takeUnretainedValue()
            // Read as bytes: a line's text is only made for a field's name and value.
            let line = UnsafeRawBufferPointer(start: data, count: size * count)
            // A new status line (after a 1xx) starts the headers over.
            if line.starts(with: "HTTP/".utf8) { collector.headers.removeAll() }
            if let colon = line.firstIndex(of: UInt8(ascii: ":")) {
                func blank(_ c: UInt8) -> Bool { c == 0x20 || c == 0x09 || c == 0x0D || c == 0x0A }
                var from = colon + 1
                var to = line.count
                while from < to, blank(line[from]) { from += 1 }
                while to > from, blank(line[to - 1]) { to -= 1 }
                collector.headers.append((String(decoding: line[..<colon], as: UTF8.self), String(decoding: line[from..<to], as: UTF8.self)))
            }
            return size * count
        }
        gh_easy_setopt_pointer(handle, CURLOPT_HEADERDATA, me)
    }
}
