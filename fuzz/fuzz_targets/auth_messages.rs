//! The messages a client sends to log in: pgwire's SSLRequest, startup
//! packet, password-family messages and every other frontend message
//! (pgwire's decoder: a client may send any of them before it is logged
//! in), the SCRAM client-first and client-final messages (Sextant's), a
//! stored verifier's text, and an HTTP/gRPC `Authorization` header. Input:
//! parts separated by 0xFF bytes. Nothing may panic.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, OnceLock};

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgwire::messages::startup::PasswordMessageFamily;
use pgwire::messages::{DecodeContext, PgWireFrontendMessage};
use sextant_auth::{Directory, Verifier};

fn directory() -> &'static Directory {
    static D: OnceLock<Directory> = OnceLock::new();
    D.get_or_init(|| {
        let catalog = Arc::new(sextant_catalog::SqliteCatalog::in_memory().unwrap());
        let d = Directory::open(catalog).unwrap();
        let admin = sextant_auth::NewUser {
            admin: true,
            md5: false,
        };
        d.create_user("root", "pencil", admin, false).unwrap();
        let md5 = sextant_auth::NewUser {
            admin: false,
            md5: true,
        };
        d.create_user("old", "pencil", md5, false).unwrap();
        d
    })
}

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|b| *b == 0xFF);
    let wire = parts.next().unwrap_or_default();
    let first = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let last = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let header = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();

    // pgwire's frontend messages, in the states before login.
    for (ssl, startup, initial) in [
        (true, true, true),
        (false, true, true),
        (false, false, true),
        (false, false, false),
    ] {
        let mut ctx = DecodeContext::default();
        ctx.awaiting_frontend_ssl = ssl;
        ctx.awaiting_frontend_startup = startup;
        let mut buf = BytesMut::from(wire);
        // A message that consumes nothing would loop forever: a few at most.
        for _ in 0..8 {
            let before = buf.len();
            let Ok(Some(msg)) = PgWireFrontendMessage::decode(&mut buf, &ctx) else {
                break;
            };
            if buf.len() == before {
                break;
            }
            // As Sextant's startup handler reads them (pgwire's own
            // SASLInitialResponse decoder panics on a bad length).
            if let PgWireFrontendMessage::PasswordMessageFamily(m) = msg {
                match m {
                    PasswordMessageFamily::Raw(body) if initial => {
                        let _ = sextant_auth::parse_initial_response(&body);
                    }
                    PasswordMessageFamily::Raw(body) => {
                        let raw = PasswordMessageFamily::Raw(body.clone());
                        let _ = raw.into_password();
                        let _ = PasswordMessageFamily::Raw(body).into_sasl_response();
                    }
                    _ => {}
                }
            }
        }
    }

    // A SCRAM exchange against a real verifier and a mock one.
    let d = directory();
    for user in ["root", "nobody"] {
        if let Ok((_, waiting)) =
            sextant_auth::server_first(user, d.scram_verifier(user), &first, "servernonce")
        {
            let _ = waiting.finish(&last);
        }
    }
    let _ = Verifier::parse(&first);
    let _ = d.authenticate(
        Some(&header),
        IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)),
        "fuzz",
    );
});
