-- An embedding model's profile says its vector size; a chat model's has none (NULL).
ALTER TABLE model_profiles ADD COLUMN dimensions BIGINT;
