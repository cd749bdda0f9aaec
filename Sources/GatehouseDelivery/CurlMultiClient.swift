import CurlShim
import Foundation
import GatehouseCore
import GatehouseHTTP
import Synchronization

/// An HTTP request the dispatcher sends.
public struct OutboundRequest: Sendable {
    public var method: String
    public var url: String
    public var headers: [(String, String)]
    public var body: [UInt8]
    public var timeout: Double

    public init(method: String = "POST", url: String, headers: [(String, String)], body: [UInt8], timeout: Double = 15) {
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
        self.timeout = timeout
    }
}

/// What came back: a status, or a transport error (no response at all).
public struct OutboundResponse: Sendable {
    public var status: Int
    public var headers: [(name: String, value: String)]
    public var body: [UInt8]
    /// libcurl's message when the transfer failed before a response (connect, TLS, timeout).
    public var transportError: String?
    public var timedOut: Bool
    public var seconds: Double
    /// The client shut down before an answer came: nothing is known about the outcome.
    public var abandoned = false

    static let abandonedAtShutdown = OutboundResponse(
        status: 0, headers: [], body: [], transportError: "abandoned at shutdown", timedOut: false, seconds: 0, abandoned: true)

    public func header(_ name: String) -> String? {
        headers.last { $0.name.caseInsensitiveCompare(name) == .orderedSame }?.value
    }
    public var text: String { String(decoding: body, as: UTF8.self) }
}

/// Sends many requests at once over libcurl's multi interface from one thread: connections are
/// kept alive and reused per host, and one slow receiver only occupies its own transfers.
/// TLS is verified, redirects are never followed, and every transfer has connect and total
/// timeouts.
public final class CurlMultiClient: @unchecked Sendable {
    // The multi handle and every easy handle are touched only by `thread`; other threads reach
    // it through `pending` and curl_multi_wakeup, the one call libcurl allows from elsewhere.
    private let multi: UnsafeMutableRawPointer
    /// Transfers handed over and not yet started; `closed` once the client has shut down.
    private let pending = Mutex<(transfers: [Transfer], closed: Bool)>(([], false))
    private let stopping = Atomic<Bool>(false)
    private var thread: Thread?
    private var idleHandles: [UnsafeMutableRawPointer] = []
    public let connectTimeout: Double
    /// Responses are kept up to this size (they are for diagnosis, not data).
    public let maxResponseBytes: Int

    public init(connectTimeout: Double = 5, maxConnectionsPerHost: Int = 32, maxResponseBytes: Int = 64 * 1024) {
        Curl.initialize()
        multi = curl_multi_init()!
        self.connectTimeout = connectTimeout
        self.maxResponseBytes = maxResponseBytes
        gh_multi_setopt_long(multi, CURLMOPT_MAX_HOST_CONNECTIONS, maxConnectionsPerHost)
        gh_multi_setopt_long(multi, CURLMOPT_MAXCONNECTS, 64)
        let thread = Thread { [unowned self] in self.loop() }
        thread.name = "gatehouse-curl"
        self.thread = thread
        thread.start()
    }

    deinit {
        curl_multi_cleanup(multi)
    }

    /// Stops at once: transfers in flight or waiting are abandoned (their `send` returns a
    /// response marked `abandoned`), and later sends are refused the same way. A shutdown must
    /// not wait for a receiver that never answers.
    public func shutdown() {
        stopping.store(true, ordering: .relaxed)
        curl_multi_wakeup(multi)
    }

    // Handed over to the curl thread once, then touched only there.
    final class Transfer: @unchecked Sendable {
        let request: OutboundRequest
        /// Called once, on the curl thread, with the answer.
        let completion: @Sendable (OutboundResponse) -> Void
        var handle: UnsafeMutableRawPointer?
        var headerList: UnsafeMutablePointer<curl_slist>?
        let response: ResponseCollector
        let started = DispatchTime.now().uptimeNanoseconds

        init(request: OutboundRequest, completion: @escaping @Sendable (OutboundResponse) -> Void, limit: Int) {
            self.request = request
            self.completion = completion
            response = ResponseCollector(limit: limit)
        }
    }

    public func send(_ request: OutboundRequest) async -> OutboundResponse {
        await withCheckedContinuation { continuation in
            submit(request) { continuation.resume(returning: $0) }
        }
    }

    /// Sends `request`; `completion` runs on the curl thread with the answer, so it must be
    /// quick and must not block. The dispatcher records outcomes from there without a task
    /// hop per delivery.
    public func submit(_ request: OutboundRequest, completion: @escaping @Sendable (OutboundResponse) -> Void) {
        let transfer = Transfer(request: request, completion: completion, limit: maxResponseBytes)
        let (accepted, wake) = pending.withLock { p -> (Bool, Bool) in
            if p.closed || stopping.load(ordering: .relaxed) { return (false, false) }
            p.transfers.append(transfer)
            // One wake-up for all the transfers handed over before the thread takes them.
            return (true, p.transfers.count == 1)
        }
        guard accepted else {
            completion(.abandonedAtShutdown)
            return
        }
        if wake { curl_multi_wakeup(multi) }
    }

    private func loop() {
        // The name the system shows (`top -H`, /proc/<pid>/task/*/comm, the benchmark's CPU by
        // thread): Foundation keeps `Thread.name` to itself on Linux.
        _ = gh_name_this_thread("gatehouse-curl")
        let m = multi
        var active: [UnsafeMutableRawPointer: Transfer] = [:]
        while true {
            if stopping.load(ordering: .relaxed) { break }
            for transfer in pending.withLock({ p -> [Transfer] in defer { p.transfers.removeAll() }; return p.transfers }) {
                start(transfer)
                active[transfer.handle!] = transfer
            }
            var running: Int32 = 0
            curl_multi_perform(m, &running)
            var remaining: Int32 = 0
            while let message = curl_multi_info_read(m, &remaining) {
                guard gh_msg_is_done(message) != 0, let easy = message.pointee.easy_handle, let transfer = active.removeValue(forKey: easy) else { continue }
                finish(transfer, code: gh_msg_result(message))
            }
            var fds: Int32 = 0
            curl_multi_poll(m, nil, 0, 1000, &fds)
        }
        for (handle, transfer) in active {
            curl_multi_remove_handle(m, handle)
            curl_slist_free_all(transfer.headerList)
            idleHandles.append(handle)
            transfer.completion(.abandonedAtShutdown)
        }
        for transfer in pending.withLock({ p -> [Transfer] in p.closed = true; defer { p.transfers.removeAll() }; return p.transfers }) {
            transfer.completion(.abandonedAtShutdown)
        }
        for handle in idleHandles { curl_easy_cleanup(handle) }
    }

    private func start(_ transfer: Transfer) {
        let h = idleHandles.popLast() ?? curl_easy_init()!
        transfer.handle = h
        let request = transfer.request
        transfer.headerList = Curl.prepare(
            h, method: request.method, url: request.url, headers: request.headers, body: request.body,
            connectTimeout: connectTimeout, timeout: request.timeout)
        transfer.response.attach(to: h)
        curl_multi_add_handle(multi, h)
    }

    private func finish(_ transfer: Transfer, code: CURLcode) {
        let h = transfer.handle!
        var status = Curl.status(h)
        curl_multi_remove_handle(multi, h)
        curl_slist_free_all(transfer.headerList)
        transfer.headerList = nil
        idleHandles.append(h)
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - transfer.started) / 1e9
        var error: String?
        if code != CURLE_OK {
            error = Curl.message(code)
            status = 0
        }
        transfer.completion(OutboundResponse(
            status: status, headers: transfer.response.headers, body: transfer.response.body, transportError: error,
            timedOut: code == CURLE_OPERATION_TIMEDOUT, seconds: seconds))
    }
}
