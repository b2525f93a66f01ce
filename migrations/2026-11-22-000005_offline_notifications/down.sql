DROP TABLE deliveries;
DROP TABLE outbox;
