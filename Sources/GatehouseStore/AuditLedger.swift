import Crypto
import Foundation
import GRDB
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
    public static func append(gateID: String?, action: String, actor: String?, detail: JSONObject, at: Timestamp, db: Database) throws -> Int64 {
        let prev = try String.fetchOne(db.cachedStatement(sql: "SELECT hash FROM audit ORDER BY seq DESC LIMIT 1")) ?? genesis
        let seq = (try Int64.fetchOne(db, sql: "SELECT COALESCE(MAX(seq), 0) FROM audit") ?? 0) + 1
        let detailText = JSONValue.object(detail).serialized()
        let hash = hash(prev: prev, canonical: canonical(seq: seq, gateID: gateID, at: at.milliseconds, action: action, actor: actor, detail: detailText))
        try db.execute(
            sql: "INSERT INTO audit (seq, gate_id, at, action, actor, detail, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            arguments: [seq, gateID, at.milliseconds, action, actor, detailText, prev, hash])
        return seq
    }

    public static func entries(gateID: String, db: Database) throws -> [AuditEntry] {
        try Row.fetchAll(db.cachedStatement(sql: "SELECT * FROM audit WHERE gate_id = ? ORDER BY seq"), arguments: [gateID]).map(entry)
    }

    static func entry(_ row: Row) -> AuditEntry {
        let detail = (try? JSONValue.parse(row["detail"] as String))?.objectValue ?? JSONObject()
        return AuditEntry(
            seq: row["seq"], gateID: row["gate_id"], at: Timestamp(milliseconds: row["at"]), action: row["action"],
            actor: row["actor"], detail: detail, prevHash: row["prev_hash"], hash: row["hash"])
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
    public static func verify(db: Database) throws -> Verification {
        var prev = genesis
        var count = 0
        var expectedSeq: Int64 = 1
        let cursor = try Row.fetchCursor(db, sql: "SELECT seq, gate_id, at, action, actor, detail, prev_hash, hash FROM audit ORDER BY seq")
        while let row = try cursor.next() {
            count += 1
            let seq: Int64 = row["seq"]
            if seq != expectedSeq {
                return Verification(entries: count, firstBroken: (expectedSeq, "entry \(expectedSeq) is missing (next is \(seq))"))
            }
            let stored: String = row["hash"]
            if (row["prev_hash"] as String) != prev {
                return Verification(entries: count, firstBroken: (seq, "its prev_hash does not match the hash of entry \(seq - 1)"))
            }
            let computed = hash(prev: prev, canonical: canonical(seq: seq, gateID: row["gate_id"], at: row["at"], action: row["action"], actor: row["actor"], detail: row["detail"]))
            if computed != stored {
                return Verification(entries: count, firstBroken: (seq, "its content does not match its hash (edited after it was written)"))
            }
            prev = stored
            expectedSeq += 1
        }
        return Verification(entries: count, firstBroken: nil)
    }
}
