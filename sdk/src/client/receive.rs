//! Receiving: fetching, the socket, and opening envelopes.

use super::*;

impl Client {
    /// Fetches what is waiting, decrypts it, stores it, then acknowledges it: nothing is
    /// acknowledged before it is safely in the local store. Then sends delivered receipts
    /// (best effort: a receipt that cannot be sent is dropped, the messages are kept) and
    /// does the prekey upkeep.
    pub async fn receive(&mut self) -> Result<Vec<Incoming>, ClientError> {
        // The organisation's maximum applies to what is stored below.
        self.refresh_policy_if_stale().await?;
        let mut events = Vec::new();
        loop {
            let batch = self.transport.fetch().await?;
            let mut acks = Vec::with_capacity(batch.envelopes.len());
            for envelope in &batch.envelopes {
                match self.handle(envelope).await {
                    Ok(event) => {
                        events.extend(event);
                        acks.push(envelope.id);
                    }
                    Err(error) => {
                        // Acknowledge what is already stored, then stop: the rest waits on
                        // the server until the local problem is fixed.
                        if !acks.is_empty() {
                            self.transport.ack(&api::AckRequest { ids: acks }).await?;
                        }
                        return Err(error);
                    }
                }
            }
            if !acks.is_empty() {
                self.transport.ack(&api::AckRequest { ids: acks }).await?;
            }
            if !batch.more || batch.envelopes.is_empty() {
                break;
            }
        }
        self.send_delivered(&events).await;
        self.maintain().await?;
        self.purge_expired().await?;
        Ok(events)
    }

    /// Opens the WebSocket; envelopes then arrive as frames for [`Self::on_frame`].
    pub async fn connect(&mut self) -> Result<Socket, ClientError> {
        self.refresh_policy_if_stale().await?;
        Ok(self.transport.connect_socket().await?)
    }

    /// Handles one frame from [`Socket::next_frame`]: an envelope is decrypted, stored,
    /// acknowledged on the socket and answered with a delivered receipt; the end of the
    /// backlog triggers the prekey upkeep.
    pub async fn on_frame(
        &mut self,
        socket: &mut Socket,
        frame: api::ServerFrame,
    ) -> Result<SocketEvent, ClientError> {
        match frame {
            api::ServerFrame::Envelope(envelope) => {
                let event = self.handle(&envelope).await?;
                socket
                    .send(&api::ClientFrame::Ack {
                        ids: vec![envelope.id],
                    })
                    .await?;
                match event {
                    Some(event) => {
                        self.send_delivered(std::slice::from_ref(&event)).await;
                        Ok(SocketEvent::Incoming(event))
                    }
                    None => Ok(SocketEvent::Nothing),
                }
            }
            api::ServerFrame::QueueEmpty => {
                self.maintain().await?;
                Ok(SocketEvent::CaughtUp)
            }
            api::ServerFrame::Pong { .. } | api::ServerFrame::Error(_) => Ok(SocketEvent::Nothing),
        }
    }

    /// Delivered receipts for the text messages among `events`, one per sender.
    pub(super) async fn send_delivered(&mut self, events: &[Incoming]) {
        let mut by_sender: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
        for event in events {
            if let IncomingKind::Text {
                message_id: Some(id),
                ..
            } = &event.kind
                && event.sender != self.account.username
            {
                by_sender
                    .entry(event.sender.as_str())
                    .or_default()
                    .push(id.clone());
            }
        }
        for (sender, ids) in by_sender {
            // Best effort: the messages are stored whatever happens to the receipt.
            let _ = self
                .send_receipt(sender, ReceiptKind::Delivered, &ids)
                .await;
        }
    }

    /// Decrypts, stores and reports an envelope obtained some other way than [`Self::receive`]
    /// or the socket (it is not acknowledged); `None` for an internal message.
    pub async fn process_envelope(
        &mut self,
        envelope: &api::Envelope,
    ) -> Result<Option<Incoming>, ClientError> {
        self.handle(envelope).await
    }

    /// Decrypts, stores and reports one envelope; `None` for an internal message (a sender
    /// key) that the app need not see.
    pub(super) async fn handle(
        &mut self,
        envelope: &api::Envelope,
    ) -> Result<Option<Incoming>, ClientError> {
        let sender = envelope.sender.clone();
        let device = envelope.sender_device;
        let incoming = |kind| Incoming {
            sender: sender.clone(),
            sender_device: device,
            time: envelope.server_timestamp.0,
            kind,
        };
        if !api::is_username(&sender) {
            // The server's claim of who sent it: a name no account can have (`group:<id>`
            // would be read back as a group's conversation) is refused before anything is
            // decrypted or stored.
            return Ok(Some(incoming(IncomingKind::Failed {
                error: format!(
                    "refused a message the server says is from {sender:?}, which is not a \
                     username"
                ),
            })));
        }
        let bytes = envelope.ciphertext.0.as_slice();
        if bytes.get(1) == Some(&tacit_crypto::consts::MESSAGE_TYPE_SENDER_KEY) {
            let opened = self
                .open_group_message(&sender, device, bytes, envelope.server_timestamp.0)
                .await?;
            return Ok(Some(match opened {
                Ok((kind, time)) => Incoming {
                    time,
                    ..incoming(kind)
                },
                Err(error) => incoming(IncomingKind::Failed { error }),
            }));
        }
        self.handle_pairwise(envelope).await
    }

    pub(super) async fn handle_pairwise(
        &mut self,
        envelope: &api::Envelope,
    ) -> Result<Option<Incoming>, ClientError> {
        let sender = envelope.sender.clone();
        let device = envelope.sender_device;
        let incoming = |kind| Incoming {
            sender: sender.clone(),
            sender_device: device,
            time: envelope.server_timestamp.0,
            kind,
        };
        let plaintext = match self
            .decrypt(&sender, device, envelope.ciphertext.0.as_slice())
            .await
        {
            Ok(plaintext) => Zeroizing::new(plaintext),
            Err(Failure::Local(error)) => return Err(error),
            Err(Failure::Message(error)) => {
                return Ok(Some(incoming(IncomingKind::Failed { error })));
            }
        };
        let Ok(payload) = serde_json::from_slice::<Payload>(&plaintext) else {
            return Ok(Some(incoming(IncomingKind::Failed {
                error: "unreadable message payload".into(),
            })));
        };
        let outgoing = sender == self.account.username;
        let peer = match (&payload.to, outgoing) {
            (Some(to), true) => to.clone(),
            _ => sender.clone(),
        };
        // The sender's own time, from inside the message; the server's only for a message
        // without one.
        let time = payload.ts.unwrap_or(envelope.server_timestamp.0);
        let incoming = |kind| Incoming {
            sender: sender.clone(),
            sender_device: device,
            time,
            kind,
        };
        let timer = payload.expire;
        match payload.content {
            Content::Text { body, id } => {
                let Some(expires_at) = self
                    .keep_until(&Conversation::direct(&peer), &sender, time, timer)
                    .await?
                else {
                    return Ok(Some(incoming(IncomingKind::Expired { peer })));
                };
                self.store
                    .add_message(
                        &Conversation::direct(&peer),
                        outgoing,
                        device,
                        time,
                        body.as_bytes(),
                        id.as_deref(),
                        expires_at,
                    )
                    .await?;
                Ok(Some(incoming(IncomingKind::Text {
                    peer,
                    text: body,
                    message_id: id,
                })))
            }
            Content::File { file, id } => {
                let kind = self
                    .receive_file(
                        &sender,
                        &Conversation::direct(&peer),
                        outgoing,
                        device,
                        (time, timer),
                        id,
                        Some(file),
                    )
                    .await?;
                Ok(Some(incoming(kind)))
            }
            Content::Timer { seconds } => {
                let kind = self
                    .on_timer(
                        &Conversation::direct(&peer),
                        peer.clone(),
                        seconds,
                        time,
                        &sender,
                    )
                    .await?;
                Ok(Some(incoming(kind)))
            }
            Content::Receipt { receipt } => {
                if !outgoing {
                    let status = match receipt.status {
                        ReceiptKind::Delivered => MessageStatus::Delivered,
                        ReceiptKind::Read => MessageStatus::Read,
                    };
                    self.store
                        .mark_outgoing(&peer, &receipt.ids, status)
                        .await?;
                }
                Ok(Some(incoming(IncomingKind::Receipt {
                    peer,
                    receipt: receipt.status,
                    message_ids: receipt.ids,
                })))
            }
            Content::GroupUpdate { body } => self.on_group_update(&sender, &body, incoming).await,
            Content::SenderKey { body } => {
                let refused = self.on_sender_key(&sender, device, &body).await?;
                Ok(refused.map(|error| incoming(IncomingKind::Failed { error })))
            }
            Content::Unknown => Ok(Some(incoming(IncomingKind::Failed {
                error: "unsupported message kind (a newer client?)".into(),
            }))),
        }
    }

    pub(super) async fn decrypt(
        &mut self,
        sender: &str,
        device: DeviceId,
        bytes: &[u8],
    ) -> Result<Vec<u8>, Failure> {
        let message = Message::from_bytes(bytes)
            .map_err(|e| Failure::Message(format!("malformed message: {e}")))?;
        // Each stored session is tried, and the one that opens the message saved, in one
        // store transaction (a decryption advances the state that the next encryption uses).
        let sessions::Tried {
            opened,
            stored,
            last_error,
        } = sessions::decrypt_stored(&self.store, sender, device, &message)
            .await
            .map_err(|e| Failure::Local(e.into()))?;
        match opened {
            Some(Ok(plaintext)) => return Ok(plaintext),
            Some(Err(error)) => return Err(Failure::Local(error)),
            None => {}
        }
        let Message::PreKey(first) = &message else {
            return Err(Failure::Message(match last_error {
                Some(error) => format!("could not decrypt: {error}"),
                None => "no session with the sender".into(),
            }));
        };
        if stored.iter().any(|s| s.base_key == first.base_key()) {
            return Err(Failure::Message(format!(
                "could not decrypt: {}",
                last_error.map_or_else(|| "duplicate".into(), |e| e.to_string())
            )));
        }
        // A first contact is pinned only once the message has authenticated (below), so a
        // forged prekey message under some identity pins nothing.
        let unpinned = match self
            .identity_unpinned(sender, device, first.identity())
            .await
        {
            Ok(unpinned) => unpinned,
            Err(error @ (ClientError::IdentityChanged { .. } | ClientError::ForeignDevice(_))) => {
                return Err(Failure::Message(error.to_string()));
            }
            Err(other) => return Err(Failure::Local(other)),
        };
        let load = |e: StoreError| Failure::Local(e.into());
        let named = sessions::named_prekeys(&self.store, first)
            .await
            .map_err(load)?;
        let sessions::NamedPrekeys {
            signed,
            kem,
            one_time,
        } = named.map_err(|refused| Failure::Message(refused.into()))?;
        let inconsistent =
            |e: tacit_crypto::DecodeError| Failure::Local(Inconsistent::from(e).into());
        let signed = SignedPreKeyPair::from_secret_bytes(&signed).map_err(inconsistent)?;
        let kem = KemPreKeyPair::from_secret_bytes(&kem).map_err(inconsistent)?;
        let one_time = one_time
            .map(|secret| OneTimePreKeyPair::from_secret_bytes(&secret))
            .transpose()
            .map_err(inconsistent)?;
        let keys = ResponderKeys {
            identity: &self.identity,
            signed_prekey: &signed,
            one_time_prekey: one_time.as_ref(),
            kem_prekey: &kem,
        };
        let local =
            Self::address(&self.account.username, self.account.device).map_err(Failure::Local)?;
        let remote = Self::address(sender, device).map_err(Failure::Local)?;
        let (session, plaintext) = Session::accept(&mut rng(), keys, &local, &remote, first)
            .map_err(|e| Failure::Message(format!("could not set up the session: {e}")))?;
        if unpinned {
            self.store
                .pin_contact(sender, &first.identity().to_bytes())
                .await
                .map_err(load)?;
        }
        sessions::save_accepted(
            &self.store,
            sender,
            device,
            &session,
            one_time.as_ref(),
            &kem,
        )
        .await
        .map_err(load)?;
        Ok(plaintext)
    }
}

/// A receive-side failure: either of this one message (reported, acknowledged) or local
/// (the store is broken: stop, acknowledge nothing).
pub(super) enum Failure {
    Message(String),
    Local(ClientError),
}
