import Crypto
import Foundation
import GatehouseCore

/// One line of the audit ledger.
public struct AuditEntry: Sendable, Equatable, Encodable, JSONOmitsAbsentFields {
    public var seq: Int64
    public var gateID: String?
    public var at: Timestamp
    /// opened, decided, refused, closed, canceled, superseded, expired, reminded, escalated,
    /// notified, callback_refused, …
    public var action: String
    public var actor: String?
    public var detail: JSONObject
    public var prevHash: String
    public var hash: String

    enum CodingKeys: String, CodingKey {
        case seq, gateID = "gate_id", at, action, actor, detail, prevHash = "prev_hash", hash
    }

    public var json: JSONValue { JSONValueEncoder.value(self) }
}

/// The hash-chained ledger of every gate change, decision, refused attempt and notification.
/// Entry n stores `hash = SHA-256(prev_hash ‖ canonical(n))` where `canonical` is the compact
/// JSON array `[seq, gate_id, at, action, actor, detail]` (keys of `detail` in the order
/// written, which is the stored text itself). Editing any field, or deleting or reordering
/// an entry, breaks the chain from there on.
public enum AuditLedger {
    public static let genesis = String(repeating: "0", count: 64)

    static func canonical(seq: Int64, gateID: String?, at: Int64, action: String, actor: String?, detail: String) -> String {
        var out = "["
        out += String(seq) + ","
        if let gateID { JSONValue.writeString(gateID, to: &out) } else { out += "null" }
        out += "," + String(at) + ","
        JSONValue.writeString(action, to: &out)
        out += ","
        if let actor { JSONValue.writeString(actor, to: &out) } else { out += "null" }
        out += "," + detail + "]"
        return out
    }

    static func hash(prev: String, canonical: String) -> String {
        SHA256.hash(data: Array((prev + canonical).utf8)).map { String(format: "%02x", $0) }.joined()
    }

    /// Appends one entry inside the caller's transaction (so it commits with the change it
    /// records).
    @discardableResult
    public static func append(gateID: String?, action: String, actor given: String?, detail: JSONObject, at: Timestamp, db: any SQLSession) throws -> Int64 {
        // Who, as text the ledger can keep exactly on both databases: a refused attempt records
        // whatever it claimed to be, control characters (a NUL) dropped, and the hash covers
        // what is stored.
        let actor = given.map { ControlCharacters.removing(from: $0) }
        let last = try db.first("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1") { ($0[0] as Int64, $0[1] as String) }
        let prev = last?.1 ?? genesis
        let seq = (last?.0 ?? 0) + 1
        let detailText = JSONValue.object(detail).serialized()
        let hash = hash(prev: prev, canonical: canonical(seq: seq, gateID: gateID, at: at.milliseconds, action: action, actor: actor, detail: detailText))
        try db.execute(
            "INSERT INTO audit (seq, gate_id, at, action, actor, detail, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [seq, gateID, at.milliseconds, action, actor, detailText, prev, hash])
        return seq
    }

    public static func entries(gateID: String, db: any SQLSession) throws -> [AuditEntry] {
        try db.all("SELECT seq, gate_id, at, action, actor, detail, prev_hash, hash FROM audit WHERE gate_id = ? ORDER BY seq", [gateID], entry)
    }

    /// An entry from the columns `seq, gate_id, at, action, actor, detail, prev_hash, hash`.
    static func entry(_ row: any SQLRow) -> AuditEntry {
        let detail = (try? JSONValue.parse(row[5] as String))?.objectValue ?? JSONObject()
        return AuditEntry(
            seq: row[0], gateID: row[1], at: Timestamp(milliseconds: row[2]), action: row[3],
            actor: row[4], detail: detail, prevHash: row[6], hash: row[7])
    }

    /// The outcome of checking the whole chain.
    public struct Verification: Sendable, Equatable {
        public var entries: Int
        /// The first entry whose hash or link does not hold, and why.
        public var firstBroken: (seq: Int64, reason: String)?
        public static func == (a: Verification, b: Verification) -> Bool {
            a.entries == b.entries && a.firstBroken?.seq == b.firstBroken?.seq && a.firstBroken?.reason == b.firstBroken?.reason
        }
    }

    /// Walks the chain from the start, recomputing each hash from the stored text.
    public static func verify(db: any SQLSession) throws -> Verification {
        var prev = genesis
        var count = 0
        var expectedSeq: Int64 = 1
        var broken: (seq: Int64, reason: String)?
        try db.query("SELECT seq, gate_id, at, action, actor, detail, prev_hash, hash FROM audit ORDER BY seq", []) { row in
            guard broken == nil else { return }
            count += 1
            let seq: Int64 = row[0]
            if seq != expectedSeq {
                broken = (expectedSeq, "entry \(expectedSeq) is missing (next is \(seq))")
                return
            }
            let stored: String = row[7]
            if (row[6] as String) != prev {
                broken = (seq, "its prev_hash does not match the hash of entry \(seq - 1)")
                return
            }
            let computed = hash(prev: prev, canonical: canonical(seq: seq, gateID: row[1], at: row[2], action: row[3], actor: row[4], detail: row[5]))
            if computed != stored {
                broken = (seq, "its content does not match its hash (edited after it was written)")
                return
            }
            prev = stored
            expectedSeq += 1
        }
        return Verification(entries: count, firstBroken: broken)
    }
}
