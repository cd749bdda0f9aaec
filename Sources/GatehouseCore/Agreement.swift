import Foundation

/// Inter-annotator agreement and the consensus label.
public enum Agreement {
    /// Cohen's kappa for two raters over the same items: `pairs[i]` is (rater 1, rater 2).
    /// κ = (pₒ − pₑ) / (1 − pₑ); nil without items. When both raters always use one same
    /// category (pₑ = 1) agreement is perfect and κ is taken as 1.
    public static func cohen(_ pairs: [(String, String)]) -> Double? {
        guard !pairs.isEmpty else { return nil }
        let n = Double(pairs.count)
        let observed = Double(pairs.filter { $0.0 == $0.1 }.count) / n
        var first: [String: Double] = [:], second: [String: Double] = [:]
        for (a, b) in pairs {
            first[a, default: 0] += 1
            second[b, default: 0] += 1
        }
        let expected = first.reduce(0.0) { sum, entry in sum + (entry.value / n) * ((second[entry.key] ?? 0) / n) }
        if expected >= 1 { return observed >= 1 ? 1 : 0 }
        return (observed - expected) / (1 - expected)
    }

    /// Fleiss' kappa: `counts[i][j]` is how many raters put item i in category j; every item
    /// has the same number of ratings n ≥ 2.
    public static func fleiss(_ counts: [[Int]]) -> Double? {
        guard let n = counts.first.map({ $0.reduce(0, +) }), n >= 2, counts.allSatisfy({ $0.reduce(0, +) == n && $0.count == counts[0].count }) else { return nil }
        let items = Double(counts.count), raters = Double(n)
        let categories = counts[0].count
        var p = [Double](repeating: 0, count: categories)
        for row in counts { for (j, c) in row.enumerated() { p[j] += Double(c) } }
        p = p.map { $0 / (items * raters) }
        let perItem = counts.map { row in (row.reduce(0.0) { $0 + Double($1 * $1) } - raters) / (raters * (raters - 1)) }
        let observed = perItem.reduce(0, +) / items
        let expected = p.reduce(0) { $0 + $1 * $1 }
        if expected >= 1 { return observed >= 1 ? 1 : 0 }
        return (observed - expected) / (1 - expected)
    }

    /// Agreement over complete items, each given as its raters' answers (canonical JSON text
    /// of the label value, in labelling order): Cohen's kappa for two raters per item (first
    /// and second rater of each item), Fleiss' kappa for more. Multilabel and spans answers
    /// count as agreeing when they are identical.
    public static func kappa(items: [[String]], raters: Int) -> Double? {
        let complete = items.filter { $0.count == raters }
        guard raters >= 2, !complete.isEmpty else { return nil }
        if raters == 2 { return cohen(complete.map { ($0[0], $0[1]) }) }
        let categories = Array(Set(complete.flatMap { $0 })).sorted()
        let index = Dictionary(uniqueKeysWithValues: categories.enumerated().map { ($1, $0) })
        return fleiss(complete.map { answers in
            var row = [Int](repeating: 0, count: categories.count)
            for a in answers { row[index[a]!] += 1 }
            return row
        })
    }

    /// The consensus of several people's labels: classification — the most frequent label
    /// (a tie goes to the label listed first in the dataset); multilabel — the labels more
    /// than half chose; spans — the spans more than half marked.
    public static func majority(_ values: [JSONValue], spec: DatasetSpec) -> JSONValue? {
        guard !values.isEmpty else { return nil }
        switch spec.task {
        case .classification:
            var counts: [String: Int] = [:]
            for v in values { if let s = v.stringValue { counts[s, default: 0] += 1 } }
            let best = counts.values.max() ?? 0
            return spec.labels.first { counts[$0] == best }.map { .string($0) }
        case .multilabel:
            var counts: [String: Int] = [:]
            for v in values { for l in v.arrayValue ?? [] { if let s = l.stringValue { counts[s, default: 0] += 1 } } }
            return .array(spec.labels.filter { (counts[$0] ?? 0) * 2 > values.count }.map { .string($0) })
        case .spans:
            var counts: [String: (Int, JSONValue)] = [:]
            for v in values {
                for span in v.arrayValue ?? [] {
                    let key = span.serialized()
                    counts[key] = ((counts[key]?.0 ?? 0) + 1, span)
                }
            }
            let kept = counts.values.filter { $0.0 * 2 > values.count }.map(\.1)
            return .array(kept.sorted { a, b in
                let x = a.objectValue, y = b.objectValue
                return (x?["start"]?.doubleValue ?? 0, x?["end"]?.doubleValue ?? 0) < (y?["start"]?.doubleValue ?? 0, y?["end"]?.doubleValue ?? 0)
            })
        }
    }
}
