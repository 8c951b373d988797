//! The wire messages between master and nodes.
//!
//! Every message is one compact JSON object in one frame, frames cut at
//! `\n` and at most [`MAX_FRAME_LENGTH`] bytes long (see [`codec`]), and
//! every object names its kind in a string field `type`. Two ports carry
//! them:
//!
//! - the master's **registration port** (`master --listen`): a node sends a
//!   [`RegistrationRequest`] and the master answers a `register` with a
//!   [`RegistrationReply`]; a `leave` gets no answer.
//! - each node's **heartbeat port** (`node --listen`): the master sends a
//!   [`Ping`] and the node answers with a [`Pong`] carrying the same `seq`.
//!
//! A registration, as it appears on the wire (`>` node to master, `<` back):
//!
//! ```text
//! > {"type":"register","id":"n1","heartbeat_addr":"127.0.0.1:4000","token":"s3cret"}
//! < {"type":"accepted"}
//! ```
//!
//! or, when the token does not match,
//!
//! ```text
//! > {"type":"register","id":"n1","heartbeat_addr":"127.0.0.1:4000"}
//! < {"type":"rejected","reason":"missing token"}
//! ```
//!
//! A heartbeat (`>` master to node, `<` back), then a node leaving:
//!
//! ```text
//! > {"type":"ping","seq":17}
//! < {"type":"pong","seq":17}
//!
//! > {"type":"leave","id":"n1"}
//! ```
//!
//! Receivers ignore fields they do not know, so a message can grow an
//! optional field without breaking older peers. Anything else that does not
//! parse is bad input: the receiver closes that connection and carries on.

use std::net::SocketAddr;

use natter::DelimiterCodec;
use serde::{Deserialize, Serialize};

/// The longest frame either port accepts, in bytes (delimiter excluded).
///
/// Real messages are a few hundred bytes at most; a small limit means a
/// peer sending garbage costs little memory before its connection is cut.
pub const MAX_FRAME_LENGTH: usize = 4 * 1024;

/// The framing of both ports, for natter's servers and clients: lines of
/// at most [`MAX_FRAME_LENGTH`] bytes.
pub fn codec() -> DelimiterCodec {
    DelimiterCodec::lines().max_frame_length(MAX_FRAME_LENGTH)
}

/// What a node sends on the master's registration port.
///
/// ```
/// use natter_heartbeat::protocol::RegistrationRequest;
///
/// let register = RegistrationRequest::Register {
///     id: "n1".into(),
///     heartbeat_addr: "127.0.0.1:4000".parse().unwrap(),
///     token: None,
/// };
/// assert_eq!(
///     serde_json::to_string(&register).unwrap(),
///     r#"{"type":"register","id":"n1","heartbeat_addr":"127.0.0.1:4000"}"#,
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RegistrationRequest {
    /// "Ping me at `heartbeat_addr` from now on." Sent at start-up and again
    /// after the node has lost the master; the master answers with a
    /// [`RegistrationReply`]. Registering again under a known `id` replaces
    /// that node's address.
    Register {
        /// The node's name (`node --id`), unique among the master's nodes.
        id: String,
        /// Where the node's heartbeat listener accepts pings. An unspecified
        /// IP (`0.0.0.0`) means "the address you see me connect from"; see
        /// [`reachable_heartbeat_addr`].
        heartbeat_addr: SocketAddr,
        /// The shared secret (`--token`), if the node was given one. Left
        /// out of the JSON when `None`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
    },
    /// "I am shutting down; stop pinging me." No reply; the master reports
    /// `node_left` instead of later reporting the node lost.
    Leave {
        /// The `id` the node registered with.
        id: String,
        /// The same token as in `register`: a master with a token ignores
        /// a `leave` without it, so no one else can make a node leave.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
    },
}

/// The master's answer to a [`RegistrationRequest::Register`].
///
/// ```
/// use natter_heartbeat::protocol::RegistrationReply;
///
/// assert_eq!(RegistrationReply::for_token(None, Some("anything")), RegistrationReply::Accepted);
/// assert_eq!(
///     serde_json::to_string(&RegistrationReply::for_token(Some("s3cret"), None)).unwrap(),
///     r#"{"type":"rejected","reason":"missing token"}"#,
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RegistrationReply {
    /// The node is registered; pings to its heartbeat address follow.
    Accepted,
    /// The node is not registered. For its token (`wrong token`,
    /// `missing token`) it gives up and exits 1; for `id in use` (the id
    /// is live at another heartbeat address) or `node limit` (the master
    /// is full) it keeps trying, since that may change. See
    /// [`gives_up`](RegistrationReply::gives_up).
    Rejected {
        /// Why, for people: printed by the node on stderr.
        reason: String,
    },
}

impl RegistrationReply {
    /// The master's verdict on a registration, from the token the master
    /// was started with (`required`) and the one the node sent (`offered`).
    ///
    /// A master without a token accepts every node, with or without one. A
    /// master with a token accepts only the same token; the reason for a
    /// rejection is `missing token` or `wrong token`, never the token.
    ///
    /// The tokens are compared in constant time
    /// ([`constant_time_eq`](constant_time_eq::constant_time_eq)): how
    /// long a wrong token takes to reject says nothing of how much of it
    /// was right (only whether its length was).
    pub fn for_token(required: Option<&str>, offered: Option<&str>) -> RegistrationReply {
        let reason = match (required, offered) {
            (None, _) => return RegistrationReply::Accepted,
            (Some(required), Some(offered))
                if constant_time_eq::constant_time_eq(required.as_bytes(), offered.as_bytes()) =>
            {
                return RegistrationReply::Accepted;
            }
            (Some(_), Some(_)) => "wrong token",
            (Some(_), None) => "missing token",
        };
        RegistrationReply::Rejected {
            reason: reason.to_owned(),
        }
    }
}

impl RegistrationReply {
    /// Whether a node rejected for `reason` gives up (exits 1) rather
    /// than trying again: only for its token, which will not change.
    ///
    /// ```
    /// use natter_heartbeat::protocol::RegistrationReply;
    ///
    /// assert!(RegistrationReply::gives_up("wrong token"));
    /// assert!(RegistrationReply::gives_up("missing token"));
    /// assert!(!RegistrationReply::gives_up("id in use"));
    /// assert!(!RegistrationReply::gives_up("node limit"));
    /// ```
    pub fn gives_up(reason: &str) -> bool {
        matches!(reason, "wrong token" | "missing token")
    }
}

/// The master's heartbeat probe, sent on a node's heartbeat port.
///
/// `seq` identifies this ping; the node copies it into its [`Pong`], and the
/// master counts a pong only for the ping it answers (see
/// [`Detector`](crate::detector::Detector)).
///
/// ```
/// use natter_heartbeat::protocol::{Ping, Pong};
///
/// let ping: Ping = serde_json::from_str(r#"{"type":"ping","seq":17}"#).unwrap();
/// assert_eq!(serde_json::to_string(&ping.answer()).unwrap(), r#"{"type":"pong","seq":17}"#);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "PingJson", into = "PingJson")]
pub struct Ping {
    /// The ping's sequence number, chosen by the master.
    pub seq: u64,
}

impl Ping {
    /// The node's answer to this ping.
    pub fn answer(self) -> Pong {
        Pong { seq: self.seq }
    }
}

/// A node's answer to a [`Ping`], carrying the ping's `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "PongJson", into = "PongJson")]
pub struct Pong {
    /// The `seq` of the ping this answers.
    pub seq: u64,
}

// `Ping` and `Pong` are plain structs to their users, but on the wire they
// carry their `type` like every other message. serde's `tag` attribute on a
// struct only writes the tag and never checks it when reading, so each goes
// through a one-variant tagged enum instead: a `pong` sent where a `ping` is
// expected is then an error ("unknown variant `pong`, expected `ping`").

#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum PingJson {
    Ping { seq: u64 },
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum PongJson {
    Pong { seq: u64 },
}

impl From<PingJson> for Ping {
    fn from(PingJson::Ping { seq }: PingJson) -> Ping {
        Ping { seq }
    }
}

impl From<Ping> for PingJson {
    fn from(Ping { seq }: Ping) -> PingJson {
        PingJson::Ping { seq }
    }
}

impl From<PongJson> for Pong {
    fn from(PongJson::Pong { seq }: PongJson) -> Pong {
        Pong { seq }
    }
}

impl From<Pong> for PongJson {
    fn from(Pong { seq }: Pong) -> PongJson {
        PongJson::Pong { seq }
    }
}

/// The address the master should ping, given the heartbeat address a node
/// advertised and the address its registration came from.
///
/// A node listening on every interface (`--listen 0.0.0.0:4000`) can only
/// advertise `0.0.0.0:4000`, which the master cannot dial. Then the node is
/// reachable at the IP it connected from, on the advertised port. A
/// specified IP is taken as given: the node knows best.
///
/// ```
/// use natter_heartbeat::protocol::reachable_heartbeat_addr;
///
/// let peer = "10.0.0.7:51234".parse().unwrap();
/// assert_eq!(
///     reachable_heartbeat_addr("0.0.0.0:4000".parse().unwrap(), peer),
///     "10.0.0.7:4000".parse().unwrap(),
/// );
/// assert_eq!(
///     reachable_heartbeat_addr("127.0.0.1:4000".parse().unwrap(), peer),
///     "127.0.0.1:4000".parse().unwrap(),
/// );
/// ```
pub fn reachable_heartbeat_addr(advertised: SocketAddr, peer: SocketAddr) -> SocketAddr {
    if advertised.ip().is_unspecified() {
        SocketAddr::new(peer.ip(), advertised.port())
    } else {
        advertised
    }
}

#[cfg(test)]
mod tests {
    use serde::Serialize;
    use serde::de::DeserializeOwned;

    use super::*;

    /// Asserts that `value` is written as exactly `json`, and that `json`
    /// reads back as `value`.
    fn assert_wire<T>(value: T, json: &str)
    where
        T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        assert_eq!(serde_json::to_string(&value).unwrap(), json);
        assert_eq!(serde_json::from_str::<T>(json).unwrap(), value);
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn register_with_token() {
        assert_wire(
            RegistrationRequest::Register {
                id: "n1".into(),
                heartbeat_addr: addr("127.0.0.1:4000"),
                token: Some("s3cret".into()),
            },
            r#"{"type":"register","id":"n1","heartbeat_addr":"127.0.0.1:4000","token":"s3cret"}"#,
        );
    }

    #[test]
    fn register_without_token_leaves_the_field_out() {
        assert_wire(
            RegistrationRequest::Register {
                id: "n1".into(),
                heartbeat_addr: addr("127.0.0.1:4000"),
                token: None,
            },
            r#"{"type":"register","id":"n1","heartbeat_addr":"127.0.0.1:4000"}"#,
        );
    }

    #[test]
    fn register_with_null_token_reads_as_no_token() {
        let read: RegistrationRequest = serde_json::from_str(
            r#"{"type":"register","id":"n1","heartbeat_addr":"127.0.0.1:4000","token":null}"#,
        )
        .unwrap();
        assert_eq!(
            read,
            RegistrationRequest::Register {
                id: "n1".into(),
                heartbeat_addr: addr("127.0.0.1:4000"),
                token: None,
            }
        );
    }

    #[test]
    fn register_with_ipv6_heartbeat_address() {
        assert_wire(
            RegistrationRequest::Register {
                id: "n1".into(),
                heartbeat_addr: addr("[::1]:4000"),
                token: None,
            },
            r#"{"type":"register","id":"n1","heartbeat_addr":"[::1]:4000"}"#,
        );
    }

    #[test]
    fn leave() {
        assert_wire(
            RegistrationRequest::Leave {
                id: "n1".into(),
                token: None,
            },
            r#"{"type":"leave","id":"n1"}"#,
        );
        assert_wire(
            RegistrationRequest::Leave {
                id: "n1".into(),
                token: Some("s3cret".into()),
            },
            r#"{"type":"leave","id":"n1","token":"s3cret"}"#,
        );
    }

    #[test]
    fn accepted() {
        assert_wire(RegistrationReply::Accepted, r#"{"type":"accepted"}"#);
    }

    #[test]
    fn rejected() {
        assert_wire(
            RegistrationReply::Rejected {
                reason: "wrong token".into(),
            },
            r#"{"type":"rejected","reason":"wrong token"}"#,
        );
    }

    #[test]
    fn ping_and_pong() {
        assert_wire(Ping { seq: 0 }, r#"{"type":"ping","seq":0}"#);
        assert_wire(
            Pong { seq: u64::MAX },
            r#"{"type":"pong","seq":18446744073709551615}"#,
        );
    }

    #[test]
    fn pong_answers_with_the_pings_seq() {
        assert_eq!(Ping { seq: 17 }.answer(), Pong { seq: 17 });
    }

    #[test]
    fn fields_may_come_in_any_order_and_unknown_ones_are_ignored() {
        let read: Ping =
            serde_json::from_str(r#"{"seq":3,"sent_at":"later","type":"ping"}"#).unwrap();
        assert_eq!(read, Ping { seq: 3 });
    }

    #[test]
    fn a_message_of_the_wrong_kind_is_rejected() {
        for (json, what) in [
            (r#"{"type":"pong","seq":1}"#, "a pong where a ping belongs"),
            (r#"{"seq":1}"#, "no type"),
            (r#"{"type":"ping"}"#, "no seq"),
            (r#"{"type":"ping","seq":-1}"#, "negative seq"),
            (r#"{"type":"ping","seq":"1"}"#, "seq as a string"),
            (r#""ping""#, "a bare string"),
            ("null", "null"),
            ("", "nothing"),
        ] {
            assert!(
                serde_json::from_str::<Ping>(json).is_err(),
                "{what}: {json}"
            );
        }
        assert!(serde_json::from_str::<Pong>(r#"{"type":"ping","seq":1}"#).is_err());
        assert!(serde_json::from_str::<RegistrationRequest>(r#"{"type":"accepted"}"#).is_err());
        assert!(
            serde_json::from_str::<RegistrationRequest>(
                r#"{"type":"register","id":"n1","heartbeat_addr":"localhost:4000"}"#
            )
            .is_err(),
            "the heartbeat address is an IP and a port, not a host name",
        );
        assert!(serde_json::from_str::<RegistrationReply>(r#"{"type":"register"}"#).is_err());
    }

    #[test]
    fn token_check() {
        use RegistrationReply::Accepted;
        let rejected = |reason: &str| RegistrationReply::Rejected {
            reason: reason.into(),
        };
        let table = [
            // required,      offered,        verdict
            (None, None, Accepted),
            (None, Some("x"), Accepted),
            (Some("s3cret"), Some("s3cret"), Accepted),
            (Some("s3cret"), Some("S3CRET"), rejected("wrong token")),
            (Some("s3cret"), Some(""), rejected("wrong token")),
            (Some("s3cret"), None, rejected("missing token")),
        ];
        for (required, offered, verdict) in table {
            assert_eq!(
                RegistrationReply::for_token(required, offered),
                verdict,
                "required {required:?}, offered {offered:?}",
            );
        }
    }

    #[test]
    fn reachable_address_fills_in_an_unspecified_ip_from_the_peer() {
        let table = [
            // advertised,       peer,               dial
            ("0.0.0.0:4000", "10.0.0.7:5000", "10.0.0.7:4000"),
            ("[::]:4000", "[fe80::1]:5000", "[fe80::1]:4000"),
            ("127.0.0.1:4000", "10.0.0.7:5000", "127.0.0.1:4000"),
            ("192.168.1.2:4000", "10.0.0.7:5000", "192.168.1.2:4000"),
        ];
        for (advertised, peer, dial) in table {
            assert_eq!(
                reachable_heartbeat_addr(addr(advertised), addr(peer)),
                addr(dial),
                "advertised {advertised}, peer {peer}",
            );
        }
    }
}
