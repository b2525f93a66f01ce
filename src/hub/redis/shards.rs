//! Where each topic's sharded channel lives: Redis Cluster's key slots and the layout
//! of masters serving them.

use redis::cluster_async::ClusterConnection;
use redis::{RedisResult, Value};

/// Redis Cluster's slot count.
const SLOTS: u16 = 16384;

/// The slot Redis Cluster gives `key`: CRC16 of its hash tag (the text between the
/// first `{` and the next `}`, when not empty), else of the whole key.
pub(super) fn slot(key: &str) -> u16 {
    let key = key.as_bytes();
    let tagged = key.iter().position(|b| *b == b'{').and_then(|open| {
        let rest = key.get(open + 1..)?;
        let close = rest.iter().position(|b| *b == b'}')?;
        rest.get(..close).filter(|tag| !tag.is_empty())
    });
    crc16::State::<crc16::XMODEM>::calculate(tagged.unwrap_or(key)) % SLOTS
}

/// The cluster's masters and the slot ranges each serves (`CLUSTER SLOTS`).
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Layout {
    ranges: Vec<(u16, u16, Node)>,
}

/// A master's address, as the cluster announces it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Node {
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl Layout {
    /// Asks any node of the cluster.
    pub(super) async fn read(connection: &mut ClusterConnection) -> RedisResult<Layout> {
        let slots: Value = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(connection)
            .await?;
        let ranges = masters(&slots)
            .into_iter()
            .map(|(first, last, host, port)| (first, last, Node { host, port }))
            .collect();
        Ok(Layout { ranges })
    }

    /// The master serving `channel`'s slot, if any does.
    pub(super) fn master_of(&self, channel: &str) -> Option<&Node> {
        let slot = slot(channel);
        self.ranges
            .iter()
            .find(|(first, last, _)| (*first..=*last).contains(&slot))
            .map(|(_, _, node)| node)
    }
}

/// `(first slot, last slot, master host, master port)` from a `CLUSTER SLOTS` reply:
/// an array of `[first, last, [host, port, id, ...], replicas...]`.
fn masters(reply: &Value) -> Vec<(u16, u16, String, u16)> {
    let Value::Array(ranges) = reply else {
        return Vec::new();
    };
    ranges
        .iter()
        .filter_map(|range| {
            let Value::Array(fields) = range else {
                return None;
            };
            let [first, last, master, ..] = fields.as_slice() else {
                return None;
            };
            let Value::Array(master) = master else {
                return None;
            };
            let [host, port, ..] = master.as_slice() else {
                return None;
            };
            Some((
                redis::from_redis_value_ref::<u16>(first).ok()?,
                redis::from_redis_value_ref::<u16>(last).ok()?,
                redis::from_redis_value_ref::<String>(host).ok()?,
                redis::from_redis_value_ref::<u16>(port).ok()?,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_redis_cluster_hash_tags() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(slot("123456789"), 12739);
        assert_eq!(slot("foo"), 12182);
        assert_eq!(slot("{user1000}.following"), slot("user1000"));
        assert_eq!(
            slot("{sc:topic:chat:a:b}:presence"),
            slot("sc:topic:chat:a:b")
        );
        // An empty tag is no tag; a tag ends at the first `}` after the first `{`.
        assert_eq!(slot("{}foo"), 9500);
        assert_eq!(slot("foo{}{bar}"), 8363);
        assert_eq!(slot("foo{{bar}}zap"), 4015);
        assert_eq!(slot("{user1000}.following"), 3443);
    }

    #[test]
    fn a_channel_belongs_to_the_master_of_its_slot() {
        let node = |port| Node {
            host: "127.0.0.1".into(),
            port,
        };
        let layout = Layout {
            ranges: vec![(0, 8191, node(7000)), (8192, 16383, node(7001))],
        };
        assert_eq!(layout.master_of("foo"), Some(&node(7001))); // slot 12182
        assert_eq!(layout.master_of("{user1000}.following"), Some(&node(7000)));
        let partial = Layout {
            ranges: vec![(0, 8191, node(7000))],
        };
        assert_eq!(partial.master_of("foo"), None);
        assert_eq!(node(7000).to_string(), "127.0.0.1:7000");
    }

    #[test]
    fn masters_are_read_from_a_cluster_slots_reply() {
        let node = |host: &str, port: i64, id: &str| {
            Value::Array(vec![
                Value::BulkString(host.as_bytes().to_vec()),
                Value::Int(port),
                Value::BulkString(id.as_bytes().to_vec()),
            ])
        };
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                node("127.0.0.1", 7000, "m1"),
                node("127.0.0.1", 7003, "r1"),
            ]),
            Value::Array(vec![Value::Int(5461), Value::Int(10922)]),
            Value::Int(3),
        ]);
        assert_eq!(
            masters(&reply),
            vec![(0, 5460, "127.0.0.1".to_owned(), 7000)]
        );
        assert!(masters(&Value::Nil).is_empty());
    }
}
