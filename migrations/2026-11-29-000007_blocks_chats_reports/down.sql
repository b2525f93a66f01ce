ALTER TABLE conversations DROP COLUMN relist_after;
ALTER TABLE deliveries DROP COLUMN report_id;
DROP TABLE reports;
DROP TABLE open_chats;
DROP TABLE blocks;
