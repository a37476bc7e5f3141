use std::time::Duration;

use eventstore::{ExpectedVersion, listen_statement};
use futures::StreamExt;
use testkit::TestDb;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};

use crate::{events, new_stream, single};

#[tokio::test]
async fn each_commit_notifies_its_last_position() {
    let database = TestDb::new().await;
    let store = database.store();
    let channel = store.notify_channel().await.expect("channel");
    assert_eq!(channel, format!("{}_events", database.schema));

    let (client, mut connection) = database.config().connect(NoTls).await.expect("connect");
    let (sender, mut notifications) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages =
            futures::stream::poll_fn(move |context| connection.poll_message(context));
        while let Some(Ok(message)) = messages.next().await {
            if let AsyncMessage::Notification(notification) = message {
                let _ = sender.send((
                    notification.channel().to_owned(),
                    notification.payload().to_owned(),
                ));
            }
        }
    });
    client
        .batch_execute(&listen_statement(&channel))
        .await
        .expect("listen");

    for count in [3, 1] {
        let outcome = store
            .append(single(
                &new_stream("lead"),
                ExpectedVersion::NoStream,
                events(count),
            ))
            .await
            .expect("append");
        let (notified_channel, payload) =
            tokio::time::timeout(Duration::from_secs(5), notifications.recv())
                .await
                .expect("a notification within 5 s")
                .expect("notification");
        assert_eq!(notified_channel, channel);
        assert_eq!(payload, outcome.position.to_string());
    }
}
