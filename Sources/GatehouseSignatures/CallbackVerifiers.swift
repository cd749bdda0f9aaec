import Crypto
import Foundation
import GatehouseCore

/// Slack's request signing (docs/platforms/slack.md): `v0=` + hex HMAC-SHA256 over
/// `v0:<timestamp>:<raw body>` with the app's signing secret, within 300 s of now.
public struct SlackSignature: Sendable {
    public let secret: String
    public static let window: Int64 = 300

    public init(secret: String) { self.secret = secret }

    public func signature(timestamp: String, body: [UInt8]) -> String {
        let message = Array("v0:\(timestamp):".utf8) + body
        let mac = HMAC<SHA256>.authenticationCode(for: message, using: SymmetricKey(data: Array(secret.utf8)))
        return "v0=" + mac.map { String(format: "%02x", $0) }.joined()
    }

    public enum Verdict: Equatable { case valid, missing, stale, badSignature }

    public func verify(timestamp: String?, signature: String?, body: [UInt8], now: Int64) -> Verdict {
        guard let timestamp, let signature, let seconds = Int64(timestamp) else { return .missing }
        // Exactly 300 s old is still accepted, as slack_sdk does.
        guard CallbackClock.within(Self.window, seconds: seconds, of: now) else { return .stale }
        // CryptoKit's check compares in constant time: timing reveals nothing of a forgery.
        guard signature.hasPrefix("v0="), signature.utf8.count == 3 + 2 * SHA256.byteCount,
              case let given = [UInt8](hexString: String(signature.dropFirst(3))), given.count == SHA256.byteCount else {
            return .badSignature
        }
        let valid = HMAC<SHA256>.isValidAuthenticationCode(given, authenticating: Array("v0:\(timestamp):".utf8) + body, using: SymmetricKey(data: Array(secret.utf8)))
        return valid ? .valid : .badSignature
    }
}

/// Discord's interaction signing (docs/platforms/discord.md): Ed25519 over the timestamp bytes
/// followed by the raw body, with the application's public key.
public struct DiscordSignature: Sendable {
    let key: Curve25519.Signing.PublicKey
    /// Discord documents no freshness window; we refuse a timestamp more than 5 minutes off so
    /// a captured request cannot be replayed later (replays inside it are caught by id).
    public static let window: Int64 = 300

    public init?(publicKeyHex: String) {
        let bytes = [UInt8](hexString: publicKeyHex)
        guard bytes.count == 32, let key = try? Curve25519.Signing.PublicKey(rawRepresentation: bytes) else { return nil }
        self.key = key
    }

    public func isValid(timestamp: String, signatureHex: String, body: [UInt8]) -> Bool {
        let signature = [UInt8](hexString: signatureHex)
        guard signature.count == 64 else { return false }
        return key.isValidSignature(signature, for: Array(timestamp.utf8) + body)
    }
}

/// How far a callback's timestamp is from now, without trusting it: `abs(now - seconds)` with
/// a timestamp of -9223372036854775808 overflowed — a crash from one unsigned Slack request.
public enum CallbackClock {
    /// Whether `seconds` is at most `window` seconds from `now`, either way.
    public static func within(_ window: Int64, seconds: Int64, of now: Int64) -> Bool {
        let (difference, overflow) = now.subtractingReportingOverflow(seconds)
        return !overflow && difference.magnitude <= UInt64(max(0, window))
    }
}
