//! The pipeline screens' queries against a real database file: filters by field, the actor rules,
//! open tasks by due date, deals' totals per stage and currency, records by ids, and the lead each
//! enquiry became.

mod support;

use estate_crm_domain::RecordKind;
use estate_crm_store::pipeline::lead_source_for_enquiry;
use estate_crm_store::{Actor, PageRequest, RecordQuery, Role, Scope, Store};
use serde_json::{Value, json};
use support::stores::TestStore;

fn admin() -> Actor {
    Actor { user_id: "usr_admin".into(), role: Role::Admin }
}

fn agent(id: &str) -> Actor {
    Actor { user_id: id.into(), role: Role::Agent }
}

fn page(limit: usize) -> PageRequest {
    PageRequest { limit, cursor: None }
}

async fn make(store: &dyn Store, actor: &Actor, kind: RecordKind, fields: Value) -> String {
    store.create_record(actor, kind, fields).await.unwrap().id
}

fn titles(records: &[estate_crm_domain::Record]) -> Vec<&str> {
    records.iter().map(|r| r.get_str("title").unwrap_or("?")).collect()
}

async fn a_stage_lists_its_own_deals_newest_first_and_an_agent_only_theirs(store: TestStore) {
    let (ann, bob) = (agent("usr_ann"), agent("usr_bob"));
    make(&*store, &ann, RecordKind::Deal, json!({"title": "A1", "stage": "offer_made"})).await;
    make(&*store, &bob, RecordKind::Deal, json!({"title": "B1", "stage": "offer_made"})).await;
    make(&*store, &ann, RecordKind::Deal, json!({"title": "A2", "stage": "new"})).await;
    make(
        &*store,
        &admin(),
        RecordKind::Deal,
        json!({"title": "For Ann", "stage": "offer_made", "assigned_agent_id": "usr_ann"}),
    )
    .await;

    let offers = RecordQuery::new(Scope::Visible).with("stage", "offer_made");
    let all = store.find_records(&admin(), RecordKind::Deal, offers.clone(), page(10)).await.unwrap();
    assert_eq!(titles(&all.items), ["For Ann", "B1", "A1"]);
    let anns = store.find_records(&ann, RecordKind::Deal, offers.clone(), page(10)).await.unwrap();
    assert_eq!(titles(&anns.items), ["For Ann", "A1"], "an agent sees what they made or are given");
    let anns_first = store.find_records(&ann, RecordKind::Deal, offers.clone(), page(1)).await.unwrap();
    assert_eq!(titles(&anns_first.items), ["For Ann"]);
    let next = PageRequest { limit: 1, cursor: anns_first.next_cursor };
    let anns_next = store.find_records(&ann, RecordKind::Deal, offers.clone(), next).await.unwrap();
    assert_eq!((titles(&anns_next.items), anns_next.next_cursor), (vec!["A1"], None));

    let first = store.find_records(&admin(), RecordKind::Deal, offers.clone(), page(2)).await.unwrap();
    assert_eq!(titles(&first.items), ["For Ann", "B1"]);
    let cursor = first.next_cursor.expect("a next page");
    let rest =
        store.find_records(&admin(), RecordKind::Deal, offers, PageRequest { limit: 2, cursor: Some(cursor) }).await;
    assert_eq!(titles(&rest.unwrap().items), ["A1"]);

    let mine = store.find_records(&admin(), RecordKind::Deal, RecordQuery::new(Scope::Mine), page(10)).await.unwrap();
    assert_eq!(titles(&mine.items), ["For Ann"], "an admin's own deals are those they made or are given");

    let bogus = RecordQuery::new(Scope::Visible).with("stage') OR 1=1 --", "x");
    let refused = store.find_records(&admin(), RecordKind::Deal, bogus, page(10)).await.unwrap_err();
    assert!(refused.to_string().contains("not a known field"), "{refused}");
}

async fn open_tasks_come_soonest_due_first_then_undated_and_completed_ones_apart(store: TestStore) {
    let ann = agent("usr_ann");
    make(&*store, &ann, RecordKind::Task, json!({"title": "undated"})).await;
    make(&*store, &ann, RecordKind::Task, json!({"title": "later", "due_date": "2031-01-01"})).await;
    make(&*store, &ann, RecordKind::Task, json!({"title": "overdue", "due_date": "2020-05-01T09:00:00Z"})).await;
    let done = make(&*store, &ann, RecordKind::Task, json!({"title": "done", "due_date": "2019-01-01"})).await;
    make(&*store, &agent("usr_bob"), RecordKind::Task, json!({"title": "bob's", "due_date": "2020-01-01"})).await;
    store.update_record(&ann, RecordKind::Task, &done, json!({"completed": true})).await.unwrap();

    let open = store.due_tasks(&ann, Scope::Mine, 0, 10).await.unwrap();
    assert_eq!(titles(&open.items), ["overdue", "later", "undated"]);
    assert_eq!(open.next_offset, None);
    let first = store.due_tasks(&ann, Scope::Mine, 0, 2).await.unwrap();
    assert_eq!((titles(&first.items), first.next_offset), (vec!["overdue", "later"], Some(2)));
    let everyone = store.due_tasks(&admin(), Scope::Visible, 0, 10).await.unwrap();
    assert_eq!(titles(&everyone.items), ["bob's", "overdue", "later", "undated"]);
    assert!(store.due_tasks(&admin(), Scope::Mine, 0, 10).await.unwrap().items.is_empty());

    let completed = RecordQuery::new(Scope::Mine).with("completed", true);
    let completed = store.find_records(&ann, RecordKind::Task, completed, page(10)).await.unwrap();
    assert_eq!(titles(&completed.items), ["done"]);
}

async fn stage_totals_count_and_add_up_each_currency_apart(store: TestStore) {
    let ann = agent("usr_ann");
    make(&*store, &ann, RecordKind::Deal, json!({"title": "a", "amount": 100000, "stage": "new"})).await;
    make(&*store, &ann, RecordKind::Deal, json!({"title": "b", "amount": 250000.5, "stage": "new"})).await;
    make(&*store, &ann, RecordKind::Deal, json!({"title": "c", "amount": 9, "currency": "EUR", "stage": "new"})).await;
    make(&*store, &ann, RecordKind::Deal, json!({"title": "d", "stage": "closed_won"})).await;
    make(&*store, &agent("usr_bob"), RecordKind::Deal, json!({"title": "e", "amount": 1, "stage": "new"})).await;

    let mut totals: Vec<(String, String, u64, f64)> = store
        .deal_stage_totals(&ann, Scope::Visible)
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.stage, t.currency, t.count, t.amount))
        .collect();
    totals.sort_by(|a, b| a.partial_cmp(b).unwrap());
    assert_eq!(
        totals,
        [
            ("closed_won".into(), "USD".into(), 1, 0.0),
            ("new".into(), "EUR".into(), 1, 9.0),
            ("new".into(), "USD".into(), 2, 350000.5),
        ]
    );
    let everyone: u64 = store.deal_stage_totals(&admin(), Scope::Visible).await.unwrap().iter().map(|t| t.count).sum();
    assert_eq!(everyone, 5);
}

async fn records_by_ids_answers_only_what_the_actor_may_see_and_leads_name_their_enquiry(store: TestStore) {
    let (ann, bob) = (agent("usr_ann"), agent("usr_bob"));
    let anns = make(&*store, &ann, RecordKind::Contact, json!({"first_name": "Ann's"})).await;
    let bobs = make(&*store, &bob, RecordKind::Contact, json!({"first_name": "Bob's"})).await;
    let ids = vec![anns.clone(), bobs.clone(), "con_nonsense".into(), anns.clone()];
    let seen = store.records_by_ids(&ann, RecordKind::Contact, ids.clone()).await.unwrap();
    assert_eq!(seen.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), [anns.as_str()]);
    assert_eq!(store.records_by_ids(&admin(), RecordKind::Contact, ids).await.unwrap().len(), 2);
    assert!(store.records_by_ids(&admin(), RecordKind::Contact, vec!["x".into(); 501]).await.is_err());

    let asked = make(&*store, &ann, RecordKind::Enquiry, json!({"name": "Cy", "email": "cy@example.com"})).await;
    let waiting = make(&*store, &ann, RecordKind::Enquiry, json!({"name": "Di", "email": "di@example.com"})).await;
    let lead = make(
        &*store,
        &ann,
        RecordKind::Lead,
        json!({"contact_id": anns, "lead_source": lead_source_for_enquiry(&asked)}),
    )
    .await;
    let made = store.leads_from_enquiries(vec![asked.clone(), waiting.clone()]).await.unwrap();
    assert_eq!(made.get(&asked), Some(&lead));
    assert_eq!(made.get(&waiting), None);
}

both_stores!(
    a_stage_lists_its_own_deals_newest_first_and_an_agent_only_theirs,
    open_tasks_come_soonest_due_first_then_undated_and_completed_ones_apart,
    stage_totals_count_and_add_up_each_currency_apart,
    records_by_ids_answers_only_what_the_actor_may_see_and_leads_name_their_enquiry
);
