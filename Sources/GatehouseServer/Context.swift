import GatehouseCore
import GatehouseServices
import GatehouseStore
import Hummingbird
import NIOCore

/// Per-request context: the peer address (protected mode needs it) and who is calling.
public struct GatehouseContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public let remoteAddress: SocketAddress?
    public var principal: Principal?
    /// The connection the request came on (gate waits are answered on it directly).
    let channel: any Channel

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        remoteAddress = source.channel.remoteAddress
        channel = source.channel
    }

    public var isLoopbackPeer: Bool { Self.isLoopback(remoteAddress) }

    static func isLoopback(_ address: SocketAddress?) -> Bool {
        guard let address else { return false }
        switch address {
        case .unixDomainSocket: return true
        case .v4, .v6:
            guard let ip = address.ipAddress else { return false }
            return ip.hasPrefix("127.") || ip == "::1" || ip.hasPrefix("::ffff:127.")
        }
    }
}

/// Who a request acts for: a token, or the local user of an unprotected loopback server.
public enum Principal: Sendable, Equatable {
    case token(AccessToken)
    case local

    /// The token's name; nil for the local user of a server without tokens.
    public var tokenName: String? {
        if case .token(let t) = self { return t.name }
        return nil
    }

    public var name: String {
        switch self {
        case .token(let t): return t.name
        case .local: return "local"
        }
    }
}
