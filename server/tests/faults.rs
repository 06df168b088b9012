//! Faults and hostile clients: every finding of the reliability review has a regression
//! test here (each failed on the code before its fix). Concurrent uploads of one blob,
//! acknowledgements from another account or with ids out of range, account deletion racing
//! device additions, the last device, multicasts to nobody, prekey caps, and the WebSocket's
//! close codes; the full-disk and lost-database tests are in `storage_faults.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures_util::StreamExt as _;
use reqwest::{Method, StatusCode};
use tacit_api::*;
use tacit_tests::*;

fn assert_code<T: std::fmt::Debug>(r: Result<T, Failure>, status: u16, code: ErrorCode) {
    let f = r.expect_err("expected an error");
    assert_eq!(f.status.as_u16(), status, "{:?}", f.body);
    assert_eq!(f.body.code, code, "{:?}", f.body);
}

async fn head_offset(client: &Client, id: &str) -> Option<u64> {
    let response = client
        .request(Method::HEAD, &format!("/v1/blobs/{id}"))
        .send()
        .await
        .unwrap();
    response
        .headers()
        .get(UPLOAD_OFFSET)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// A second `PATCH` while the first still streams is refused with 409 at once, and the
/// server keeps answering everything, during and after (it used to deadlock on itself).
async fn concurrent_uploads_of_one_blob(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", 1).await;
    let id = alice.reserve_blob(1000).await;
    // The first upload sends 100 bytes, then holds its body open.
    let (tx, request) = alice.streamed_patch(&id, 1000);
    let first = tokio::spawn(async move { request.send().await.map(|r| r.status()) });
    tx.send(Ok(vec![1; 100])).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while head_offset(&alice, &id).await != Some(100) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "first upload never got going"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The second is refused at once, and so is a DELETE, while the first is under way.
    for _ in 0..3 {
        let second = tokio::time::timeout(
            Duration::from_secs(5),
            alice
                .request(Method::PATCH, &format!("/v1/blobs/{id}"))
                .header("content-type", BLOB_UPLOAD_CONTENT_TYPE)
                .header(UPLOAD_OFFSET, 100)
                .body(vec![2; 10])
                .send(),
        )
        .await
        .expect("a second PATCH got no answer")
        .unwrap();
        assert_eq!(second.status(), StatusCode::CONFLICT);
        let body: ErrorBody = second.json().await.unwrap();
        assert_eq!(body.code, ErrorCode::Conflict);
    }
    assert_code(
        alice
            .call_empty::<()>(Method::DELETE, &format!("/v1/blobs/{id}"), None)
            .await,
        409,
        ErrorCode::Conflict,
    );
    let health = tokio::time::timeout(
        Duration::from_secs(5),
        server.http.get(format!("{}/healthz", server.base)).send(),
    )
    .await
    .expect("the server froze during the upload")
    .unwrap();
    assert_eq!(health.status(), StatusCode::OK);

    // The first connection ends part-way; the server still answers, and the upload resumes
    // from where it was.
    drop(tx);
    // The client aborted its own body: it may see that error, or the server's answer.
    let ended = tokio::time::timeout(Duration::from_secs(10), first)
        .await
        .expect("the first upload never ended")
        .unwrap();
    if let Ok(status) = ended {
        assert!(status.is_client_error(), "{status}");
    }
    for _ in 0..3 {
        let health = tokio::time::timeout(
            Duration::from_secs(5),
            server.http.get(format!("{}/healthz", server.base)).send(),
        )
        .await
        .expect("the server froze after the first upload ended")
        .unwrap();
        assert_eq!(health.status(), StatusCode::OK);
    }
    assert_eq!(head_offset(&alice, &id).await, Some(100));
    // The client can see its own aborted body before the server's handler has finished
    // with it: until then the blob is still being written and a PATCH is 409, so resume as
    // a client would, retrying a conflict for a while.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let done = loop {
        let done = alice
            .request(Method::PATCH, &format!("/v1/blobs/{id}"))
            .header("content-type", BLOB_UPLOAD_CONTENT_TYPE)
            .header(UPLOAD_OFFSET, 100)
            .body(vec![3; 900])
            .send()
            .await
            .unwrap();
        if done.status() != StatusCode::CONFLICT || tokio::time::Instant::now() > deadline {
            break done;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(done.status(), StatusCode::NO_CONTENT);
    assert_eq!(head_offset(&alice, &id).await, Some(1000));
    server.stop().await;
}
both!(concurrent_uploads_of_one_blob);

async fn fetch_all(client: &Client) -> Vec<Envelope> {
    let (_, batch): (_, EnvelopeBatch) = client
        .call::<(), _>(Method::GET, "/v1/messages", None)
        .await
        .unwrap();
    batch.envelopes
}

/// While Bob acknowledges his envelopes, Mallory sends acknowledgements for the same ids at
/// the same moments: every one of Bob's envelopes is gone afterwards, none delivered again.
async fn acks_from_another_account_change_nothing(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", 1).await;
    let bob = server.register("bob", 1).await;
    let mallory = server.register("mallory", 1).await;
    let mut acked_by_bob = 0;
    for round in 0..5 {
        let sends = (0..40).map(|i| {
            let alice = alice.clone();
            async move {
                alice
                    .send(&format!("r{round}m{i}"), "bob", &[(1, b"ct")], &[])
                    .await
                    .unwrap();
            }
        });
        futures_util::future::join_all(sends).await;
        let ids: Vec<u64> = fetch_all(&bob).await.iter().map(|e| e.id).collect();
        assert_eq!(ids.len(), 40);
        // One ack per id from each account, all at once, so that they share write batches.
        let acks = ids.iter().flat_map(|id| {
            [&mallory, &bob].map(|client| {
                let client = client.clone();
                let ids = vec![*id];
                async move {
                    client
                        .call_empty(Method::POST, "/v1/messages/ack", Some(&AckRequest { ids }))
                        .await
                        .unwrap();
                }
            })
        });
        futures_util::future::join_all(acks).await;
        let left = fetch_all(&bob).await;
        assert!(
            left.is_empty(),
            "round {round}: {} of Bob's acknowledged envelopes are still in his mailbox",
            left.len()
        );
        acked_by_bob += ids.len();
    }
    assert_eq!(acked_by_bob, 200);
    server.stop().await;
}
both!(acks_from_another_account_change_nothing);

/// An ack id beyond `i64::MAX` is refused at the edge (HTTP and socket), and clients
/// sending such acks while others send fail nobody else's writes.
async fn a_malformed_ack_fails_only_itself(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", 1).await;
    let bob = server.register("bob", 1).await;
    let mallory = server.register("mallory", 1).await;
    for ids in [vec![u64::MAX], vec![1, (i64::MAX as u64) + 1], vec![0]] {
        assert_code(
            mallory
                .call_empty(Method::POST, "/v1/messages/ack", Some(&AckRequest { ids }))
                .await,
            400,
            ErrorCode::BadRequest,
        );
    }
    let mut socket = mallory.connect(&server.ws_url()).await;
    assert!(socket.backlog().await.is_empty());
    socket
        .send(&ClientFrame::Ack {
            ids: vec![u64::MAX],
        })
        .await;
    match socket.frame().await {
        ServerFrame::Error(e) => assert_eq!(e.code, ErrorCode::BadRequest),
        other => panic!("expected an error frame, got {other:?}"),
    }

    // Four hostile clients keep acking huge ids while Alice sends 200 messages.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hostile: Vec<_> = (0..4)
        .map(|_| {
            let mallory = mallory.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut refused = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let r = mallory
                        .call_empty(
                            Method::POST,
                            "/v1/messages/ack",
                            Some(&AckRequest {
                                ids: vec![u64::MAX, 5, 6],
                            }),
                        )
                        .await;
                    assert_eq!(r.unwrap_err().status, StatusCode::BAD_REQUEST);
                    refused += 1;
                }
                refused
            })
        })
        .collect();
    let sends = (0..200).map(|i| {
        let alice = alice.clone();
        async move {
            alice
                .send(&format!("m{i}"), "bob", &[(1, b"ct")], &[])
                .await
        }
    });
    let results = futures_util::future::join_all(sends).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for h in hostile {
        assert!(h.await.unwrap() > 0);
    }
    let failed: Vec<_> = results.iter().filter(|r| r.is_err()).collect();
    assert!(
        failed.is_empty(),
        "{} sends failed: {:?}",
        failed.len(),
        failed.first()
    );
    let mut delivered = 0;
    loop {
        let batch = fetch_all(&bob).await;
        if batch.is_empty() {
            break;
        }
        delivered += batch.len();
        let ids = batch.iter().map(|e| e.id).collect();
        bob.call_empty(Method::POST, "/v1/messages/ack", Some(&AckRequest { ids }))
            .await
            .unwrap();
    }
    assert_eq!(delivered, 200);
    server.stop().await;
}
both!(a_malformed_ack_fails_only_itself);

/// Deleting an account while its devices add devices and reserve blobs leaves nothing
/// working behind: no device of the deleted account authenticates afterwards, and no blob
/// row stays on it.
async fn account_deletion_wins_over_requests_in_flight(backend: Backend) {
    let server = TestServer::start(backend).await;
    for round in 0..10 {
        let alice = server.register(&format!("alice{round}"), 0).await;
        let adds = (0..4).map(|_| {
            let alice = alice.clone();
            async move {
                let r = alice
                    .request(Method::POST, "/v1/devices")
                    .json(&AddDeviceRequest {
                        device_name: None,
                        keys: keys(0, 0),
                    })
                    .send()
                    .await
                    .unwrap();
                let status = r.status();
                let text = r.text().await.unwrap();
                (status, text)
            }
        });
        let blobs = (0..4).map(|_| {
            let alice = alice.clone();
            async move {
                alice
                    .request(Method::POST, "/v1/blobs")
                    .json(&CreateBlobRequest { size: 10 })
                    .send()
                    .await
                    .unwrap()
                    .status()
            }
        });
        let delete = {
            let alice = alice.clone();
            async move {
                alice
                    .call_empty::<()>(Method::DELETE, "/v1/accounts/me", None)
                    .await
            }
        };
        let (added, _, deleted) = tokio::join!(
            futures_util::future::join_all(adds),
            futures_util::future::join_all(blobs),
            delete
        );
        deleted.unwrap();
        for (status, text) in added {
            if status == StatusCode::CREATED {
                let r: AddDeviceResponse = serde_json::from_str(&text).unwrap();
                let device = server.client(Some(&r.credential));
                let (status, _) = device
                    .request(Method::GET, "/v1/devices")
                    .send()
                    .await
                    .map(|r| (r.status(), ()))
                    .unwrap();
                assert_eq!(
                    status,
                    StatusCode::UNAUTHORIZED,
                    "round {round}: a device added during the deletion still works"
                );
                assert_code(
                    device
                        .call::<_, CreateBlobResponse>(
                            Method::POST,
                            "/v1/blobs",
                            Some(&CreateBlobRequest { size: 10 }),
                        )
                        .await,
                    401,
                    ErrorCode::Unauthorized,
                );
            } else {
                assert!(
                    status == StatusCode::UNAUTHORIZED,
                    "round {round}: {status} {text}"
                );
            }
        }
        assert_code(
            alice
                .call::<_, CreateBlobResponse>(
                    Method::POST,
                    "/v1/blobs",
                    Some(&CreateBlobRequest { size: 10 }),
                )
                .await,
            401,
            ErrorCode::Unauthorized,
        );
    }
    // No blob row outlived its account: every reservation above was either deleted with
    // the account or refused.
    let orphans = server
        .count(
            "SELECT COUNT(*) FROM blobs b JOIN accounts a ON a.id = b.account_id \
             WHERE a.username LIKE '#deleted-%'",
        )
        .await;
    assert_eq!(orphans, 0);
    let devices = server
        .count(
            "SELECT COUNT(*) FROM devices d JOIN accounts a ON a.id = d.account_id \
             WHERE a.username LIKE '#deleted-%'",
        )
        .await;
    assert_eq!(devices, 0);
    server.stop().await;
}
both!(account_deletion_wins_over_requests_in_flight);

/// The last device of an account cannot remove itself (the account would be left with no
/// device and its name held for ever); deleting the account is the way.
async fn the_last_device_stays(backend: Backend) {
    let server = TestServer::start(backend).await;
    let solo = server.register("solo", 0).await;
    assert_code(
        solo.call_empty::<()>(Method::DELETE, "/v1/devices/1", None)
            .await,
        409,
        ErrorCode::Conflict,
    );
    let (status, _): (_, DeviceList) = solo
        .call::<(), _>(Method::GET, "/v1/devices", None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    server.stop().await;
}
both!(the_last_device_stays);

/// A multicast that names only users who do not exist, with no devices, is refused and
/// stores nothing; a recipient without devices still counts toward the destination cap.
async fn multicasts_to_nobody_are_refused(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", 0).await;
    let ghosts = |n: usize| MulticastRequest {
        client_message_id: "m".into(),
        ciphertext: Ciphertext(vec![1; 64].into()),
        recipients: (0..n)
            .map(|i| MulticastRecipient {
                username: format!("ghost{i}"),
                device_ids: Vec::new(),
            })
            .collect(),
        own_devices: Vec::new(),
    };
    assert_code(
        alice
            .call::<_, SendMessageResponse>(Method::POST, "/v1/multicast", Some(&ghosts(3)))
            .await,
        404,
        ErrorCode::NotFound,
    );
    assert_code(
        alice
            .call::<_, SendMessageResponse>(Method::POST, "/v1/multicast", Some(&ghosts(5001)))
            .await,
        413,
        ErrorCode::PayloadTooLarge,
    );
    assert_eq!(server.count("SELECT COUNT(*) FROM message_bodies").await, 0);
    server.stop().await;
}
both!(multicasts_to_nobody_are_refused);

/// One-time prekey signatures are length-checked and a device's stock is capped.
async fn prekey_uploads_are_bounded(backend: Backend) {
    let server = TestServer::start_with(backend, |c| c.limits.max_one_time_prekeys = 150).await;
    let alice = server.register("alice", 100).await;
    let mut huge = keys(1, 1000).one_time_prekeys;
    huge[0].signature = vec![9; 2_500_000].into();
    let r = alice
        .request(Method::PUT, "/v1/keys")
        .json(&UploadKeysRequest {
            one_time_prekeys: huge,
            ..UploadKeysRequest::default()
        })
        .send()
        .await
        .unwrap();
    assert!(
        r.status() == StatusCode::BAD_REQUEST || r.status() == StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        r.status()
    );
    let mut long = keys(1, 1000).one_time_prekeys;
    long[0].signature = vec![9; 5000].into();
    assert_code(
        alice
            .call_empty(
                Method::PUT,
                "/v1/keys",
                Some(&UploadKeysRequest {
                    one_time_prekeys: long,
                    ..UploadKeysRequest::default()
                }),
            )
            .await,
        400,
        ErrorCode::BadRequest,
    );
    // 100 in stock, 50 more fit, 51 do not.
    let more = |n: u32, first: u32| UploadKeysRequest {
        one_time_prekeys: keys(n, first).one_time_prekeys,
        ..UploadKeysRequest::default()
    };
    assert_code(
        alice
            .call_empty(Method::PUT, "/v1/keys", Some(&more(51, 1000)))
            .await,
        409,
        ErrorCode::Conflict,
    );
    alice
        .call_empty(Method::PUT, "/v1/keys", Some(&more(50, 1000)))
        .await
        .unwrap();
    let (_, count): (_, PrekeyCount) = alice
        .call::<(), _>(Method::GET, "/v1/keys/count", None)
        .await
        .unwrap();
    assert_eq!(count.one_time_prekeys, 150);
    server.stop().await;
}
both!(prekey_uploads_are_bounded);

/// A socket that breaks the protocol is closed with a close code that says how.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_violations_get_a_close_code() {
    use futures_util::SinkExt as _;
    use tokio_tungstenite::tungstenite::Message;
    let server = TestServer::start(Backend::Sqlite).await;
    let alice = server.register("alice", 0).await;
    let mut socket = alice.connect(&server.ws_url()).await;
    assert!(socket.backlog().await.is_empty());
    // A text frame larger than the server takes.
    socket
        .ws
        .send(Message::Text("x".repeat(200 * 1024).into()))
        .await
        .unwrap();
    let mut code = None;
    while let Ok(Some(message)) =
        tokio::time::timeout(Duration::from_secs(10), socket.ws.next()).await
    {
        match message {
            Ok(Message::Close(Some(frame))) => {
                code = Some(u16::from(frame.code));
                break;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    assert_eq!(code, Some(1009));
    server.stop().await;
}

/// An empty provisioning answer is malformed (400), not too large.
async fn an_empty_provisioning_answer_is_a_bad_request(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", 0).await;
    let (_, channel): (_, OpenChannelResponse) = server
        .client(None)
        .call(
            Method::POST,
            "/v1/provisioning",
            Some(&OpenChannelRequest {
                public_key: vec![5; 32].into(),
            }),
        )
        .await
        .unwrap();
    assert_code(
        alice
            .call_empty(
                Method::PUT,
                &format!("/v1/provisioning/{}", channel.channel),
                Some(&AnswerChannelRequest {
                    message: Vec::new().into(),
                    link_token: "t".repeat(32),
                }),
            )
            .await,
        400,
        ErrorCode::BadRequest,
    );
    server.stop().await;
}
both!(an_empty_provisioning_answer_is_a_bad_request);

/// A blob whose record goes (expired and purged, or its account deleted) while an upload
/// still writes it leaves no file behind: the upload is answered 404 and its files deleted.
async fn an_upload_outliving_its_record_leaves_no_file(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.register("alice", 0).await;
    let id = alice.reserve_blob(1000).await;
    let (tx, request) = alice.streamed_patch(&id, 1000);
    let upload = tokio::spawn(async move { request.send().await.unwrap() });
    tx.send(Ok(vec![1; 500])).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while head_offset(&alice, &id).await != Some(500) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "upload never got going"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The record goes, as the purge would take it.
    assert_eq!(
        server
            .count("DELETE FROM blobs RETURNING CAST(1 AS BIGINT)")
            .await,
        1
    );
    tx.send(Ok(vec![2; 500])).await.unwrap();
    drop(tx);
    let response = upload.await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let dir = server.data_dir.path().join("blobs");
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert!(left.is_empty(), "files left behind: {left:?}");
    server.stop().await;
}
both!(an_upload_outliving_its_record_leaves_no_file);
