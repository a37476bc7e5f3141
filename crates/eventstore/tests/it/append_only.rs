use eventstore::ExpectedVersion;
use testkit::{TestDb, error_chain};

use crate::{events, new_stream, single};

#[tokio::test]
async fn update_delete_and_truncate_are_refused_for_the_application_user() {
    let database = TestDb::new().await;
    let store = database.store();
    store
        .append(single(
            &new_stream("lead"),
            ExpectedVersion::NoStream,
            events(2),
        ))
        .await
        .expect("append");

    let client = database.pool.get().await.expect("pooled connection");
    for statement in [
        "update events set event_type = 'Rewritten'",
        "delete from events",
        "truncate events",
        "truncate events cascade",
    ] {
        let error = client
            .batch_execute(statement)
            .await
            .expect_err("changing history must fail");
        let chain = error_chain(&error);
        assert!(chain.contains("append-only"), "{statement}: {chain}");
    }
    assert_eq!(store.read_all(0, 100, None).await.expect("read").len(), 2);

    // The privileges are gone too, for the owner and for PUBLIC, so a non-superuser role is
    // stopped before the trigger even runs.
    let rows = client
        .query(
            "select coalesce(grantee_role.rolname, 'PUBLIC'), acl.privilege_type
             from pg_class,
                  aclexplode(pg_class.relacl) as acl
                  left join pg_roles as grantee_role on grantee_role.oid = acl.grantee
             where pg_class.oid = 'events'::regclass",
            &[],
        )
        .await
        .expect("acl");
    let current_user: String = client
        .query_one("select current_user::text", &[])
        .await
        .expect("user")
        .get(0);
    let owner_privileges: Vec<String> = rows
        .iter()
        .filter(|row| row.get::<_, String>(0) == current_user)
        .map(|row| row.get(1))
        .collect();
    assert!(owner_privileges.contains(&"INSERT".to_owned()));
    assert!(owner_privileges.contains(&"SELECT".to_owned()));
    for refused in ["UPDATE", "DELETE", "TRUNCATE"] {
        assert!(
            rows.iter().all(|row| row.get::<_, String>(1) != refused),
            "{refused} must not be granted to anyone"
        );
    }
}
