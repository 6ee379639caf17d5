-- A results database written by upcycle 0.1.0 before the package reshape (issue 13), by
-- /tmp/compat/make_old_db.py in the note of that change: a tiny BERT (tests/conftest.py save_tiny_bert, seed 0)
-- finetuned on poem_sentiment (seed 3), and a 1-seed bench 'compat' on cb and rte. Paths are that machine's.
BEGIN TRANSACTION;
CREATE TABLE benches (
        name TEXT PRIMARY KEY,
        arch TEXT NOT NULL,
        definition TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
INSERT INTO "benches" VALUES('compat','bert-L2-H32-V30522','{"name":"compat","arch":"bert-L2-H32-V30522","base":{"checkpoint":{"reference":"/tmp/compat/out/tiny-bert","name":"tiny-bert","fingerprint":"1ed533171af01d59651ca8b5819aaf1c0144197b01795a2d9349f21da87625d4","model_type":"bert","allow_pickle":false},"source_task":null},"candidates":[],"targets":[{"source":"/work/shared/datasets/cb","name":"cb","fingerprint":"1ca693d68a3d058963da555b220c98c0297c8a140ce7e9fa09e7730cd9e851c6","text_column":"text","text_pair_column":null,"label_column":"label","task_type":"auto"},{"source":"/work/shared/datasets/rte","name":"rte","fingerprint":"c3e35c1c80136e52b6ad59730530a550be44db4b5b349722f2f12d001f1fb494","text_column":"text","text_pair_column":null,"label_column":"label","task_type":"auto"}],"seeds":[0],"protocol":{"name":"quick+","max_train":48,"max_eval":32,"epochs":1,"batch_size":16,"learning_rate":0.002,"learning_rate_by_model_type":[],"warmup_ratio":0.06,"weight_decay":0.01,"max_grad_norm":1.0,"max_length":128,"early_stopping_patience":null,"data_seed":0,"length_grouping":true,"train_precision":"fp32","eval_precision":"auto"},"overlap_groups":[["rotten_tomatoes","sst2","sst5"],["trec_coarse","trec_fine"]]}','2026-11-30T02:00:17+00:00');
CREATE TABLE checkpoints (
        fingerprint TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        path TEXT NOT NULL,
        arch TEXT NOT NULL,
        model_type TEXT NOT NULL,
        source_task TEXT,
        base_fingerprint TEXT,
        provenance TEXT,
        added_at TEXT NOT NULL
    );
INSERT INTO "checkpoints" VALUES('1ed533171af01d59651ca8b5819aaf1c0144197b01795a2d9349f21da87625d4','tiny-bert','/tmp/compat/out/tiny-bert','bert-L2-H32-V30522','bert',NULL,NULL,NULL,'2026-11-30T02:00:16+00:00');
CREATE TABLE features (
        checkpoint_fingerprint TEXT NOT NULL,
        task_fingerprint TEXT NOT NULL,
        sample TEXT NOT NULL,
        n INTEGER NOT NULL,
        dim INTEGER NOT NULL,
        data BLOB NOT NULL,
        cpu_seconds REAL NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (checkpoint_fingerprint, task_fingerprint, sample)
    );
CREATE TABLE finetune_results (
        key TEXT PRIMARY KEY,
        base_fingerprint TEXT NOT NULL,
        task_fingerprint TEXT NOT NULL,
        task_name TEXT NOT NULL,
        seed INTEGER NOT NULL,
        protocol TEXT NOT NULL,
        metric TEXT NOT NULL,
        score REAL NOT NULL,
        spec TEXT NOT NULL,
        result TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
INSERT INTO "finetune_results" VALUES('a81578f4d781e61235c3bb6fa340d7d4c6b4c1cbe29e4871ba212ab27e0974a4','1ed533171af01d59651ca8b5819aaf1c0144197b01795a2d9349f21da87625d4','eb74c4ba1fb8ac1aec052fe4b20e5b908c1b207c0b60884043628d76c9fa7444','poem_sentiment',3,'quick+','accuracy',0.65625,'{"base":{"reference":"/tmp/compat/out/tiny-bert","name":"tiny-bert","fingerprint":"1ed533171af01d59651ca8b5819aaf1c0144197b01795a2d9349f21da87625d4","model_type":"bert","allow_pickle":false},"task":{"source":"/work/shared/datasets/poem_sentiment","name":"poem_sentiment","fingerprint":"eb74c4ba1fb8ac1aec052fe4b20e5b908c1b207c0b60884043628d76c9fa7444","text_column":"text","text_pair_column":null,"label_column":"label","task_type":"auto"},"seed":3,"protocol":{"name":"quick+","max_train":48,"max_eval":32,"epochs":1,"batch_size":16,"learning_rate":0.002,"learning_rate_by_model_type":[],"warmup_ratio":0.06,"weight_decay":0.01,"max_grad_norm":1.0,"max_length":128,"early_stopping_patience":null,"data_seed":0,"length_grouping":true,"train_precision":"fp32","eval_precision":"auto"}}','{"key":"a81578f4d781e61235c3bb6fa340d7d4c6b4c1cbe29e4871ba212ab27e0974a4","task_name":"poem_sentiment","base_name":"tiny-bert","seed":3,"protocol":"quick+","metric":"accuracy","score":0.65625,"metrics":{"accuracy":0.65625,"macro_f1":0.2641509433962264},"validation":null,"n_train":48,"n_test":32,"epochs_run":1,"train_seconds":0.03797717099996589,"eval_seconds":0.006647779000104492,"train_examples_per_s":1263.9172096321527,"eval_examples_per_s":4813.637757737887,"eval_precision":"bf16","checkpoint_path":null,"versions":{"upcycle":"0.1.0","engine":"1","torch":"2.13.0+cpu","transformers":"5.24.0"},"created_at":"2026-11-30T02:00:17+00:00"}','2026-11-30T02:00:17+00:00');
INSERT INTO "finetune_results" VALUES('81fdeebf08460ae5cf1e5d31d3cd0b25342f9044404faef4fbc6ef3a2406ad83','1ed533171af01d59651ca8b5819aaf1c0144197b01795a2d9349f21da87625d4','1ca693d68a3d058963da555b220c98c0297c8a140ce7e9fa09e7730cd9e851c6','cb',0,'quick+','accuracy',0.5,'{"base":{"reference":"/tmp/compat/out/tiny-bert","name":"tiny-bert","fingerprint":"1ed533171af01d59651ca8b5819aaf1c0144197b01795a2d9349f21da87625d4","model_type":"bert","allow_pickle":false},"task":{"source":"/work/shared/datasets/cb","name":"cb","fingerprint":"1ca693d68a3d058963da555b220c98c0297c8a140ce7e9fa09e7730cd9e851c6","text_column":"text","text_pair_column":null,"label_column":"label","task_type":"auto"},"seed":0,"protocol":{"name":"quick+","max_train":48,"max_eval":32,"epochs":1,"batch_size":16,"learning_rate":0.002,"learning_rate_by_model_type":[],"warmup_ratio":0.06,"weight_decay":0.01,"max_grad_norm":1.0,"max_length":128,"early_stopping_patience":null,"data_seed":0,"length_grouping":true,"train_precision":"fp32","eval_precision":"auto"}}','{"key":"81fdeebf08460ae5cf1e5d31d3cd0b25342f9044404faef4fbc6ef3a2406ad83","task_name":"cb","base_name":"tiny-bert","seed":0,"protocol":"quick+","metric":"accuracy","score":0.5,"metrics":{"accuracy":0.5,"macro_f1":0.2222222222222222},"validation":null,"n_train":48,"n_test":32,"epochs_run":1,"train_seconds":0.0819439050001165,"eval_seconds":0.00810931699993489,"train_examples_per_s":585.7665679946758,"eval_examples_per_s":3946.0783195745003,"eval_precision":"bf16","checkpoint_path":null,"versions":{"upcycle":"0.1.0","engine":"1","torch":"2.13.0+cpu","transformers":"5.24.0"},"created_at":"2026-11-30T02:00:17+00:00"}','2026-11-30T02:00:17+00:00');
INSERT INTO "finetune_results" VALUES('9f34d8ee8f250cdb9bda9bbfa0d6ec1809ef0fb6d18ead1d73350e8de189a644','1ed533171af01d59651ca8b5819aaf1c0144197b01795a2d9349f21da87625d4','c3e35c1c80136e52b6ad59730530a550be44db4b5b349722f2f12d001f1fb494','rte',0,'quick+','accuracy',0.53125,'{"base":{"reference":"/tmp/compat/out/tiny-bert","name":"tiny-bert","fingerprint":"1ed533171af01d59651ca8b5819aaf1c0144197b01795a2d9349f21da87625d4","model_type":"bert","allow_pickle":false},"task":{"source":"/work/shared/datasets/rte","name":"rte","fingerprint":"c3e35c1c80136e52b6ad59730530a550be44db4b5b349722f2f12d001f1fb494","text_column":"text","text_pair_column":null,"label_column":"label","task_type":"auto"},"seed":0,"protocol":{"name":"quick+","max_train":48,"max_eval":32,"epochs":1,"batch_size":16,"learning_rate":0.002,"learning_rate_by_model_type":[],"warmup_ratio":0.06,"weight_decay":0.01,"max_grad_norm":1.0,"max_length":128,"early_stopping_patience":null,"data_seed":0,"length_grouping":true,"train_precision":"fp32","eval_precision":"auto"}}','{"key":"9f34d8ee8f250cdb9bda9bbfa0d6ec1809ef0fb6d18ead1d73350e8de189a644","task_name":"rte","base_name":"tiny-bert","seed":0,"protocol":"quick+","metric":"accuracy","score":0.53125,"metrics":{"accuracy":0.53125,"macro_f1":0.3469387755102041},"validation":null,"n_train":48,"n_test":32,"epochs_run":1,"train_seconds":0.06945427100004054,"eval_seconds":0.007342080000171336,"train_examples_per_s":691.1022073786072,"eval_examples_per_s":4358.437935742084,"eval_precision":"bf16","checkpoint_path":null,"versions":{"upcycle":"0.1.0","engine":"1","torch":"2.13.0+cpu","transformers":"5.24.0"},"created_at":"2026-11-30T02:00:17+00:00"}','2026-11-30T02:00:17+00:00');
CREATE TABLE tasks (
        fingerprint TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        source TEXT NOT NULL,
        kind TEXT NOT NULL,
        num_labels INTEGER NOT NULL,
        sizes TEXT NOT NULL,
        added_at TEXT NOT NULL
    );
INSERT INTO "tasks" VALUES('eb74c4ba1fb8ac1aec052fe4b20e5b908c1b207c0b60884043628d76c9fa7444','poem_sentiment','/work/shared/datasets/poem_sentiment','classification',4,'{"train": 892, "validation": 105, "test": 104}','2026-11-30T02:00:16+00:00');
INSERT INTO "tasks" VALUES('1ca693d68a3d058963da555b220c98c0297c8a140ce7e9fa09e7730cd9e851c6','cb','/work/shared/datasets/cb','classification',3,'{"train": 225, "validation": 25, "test": 56}','2026-11-30T02:00:17+00:00');
INSERT INTO "tasks" VALUES('c3e35c1c80136e52b6ad59730530a550be44db4b5b349722f2f12d001f1fb494','rte','/work/shared/datasets/rte','classification',2,'{"train": 2241, "validation": 249, "test": 277}','2026-11-30T02:00:17+00:00');
CREATE INDEX finetune_results_base ON finetune_results (base_fingerprint);
CREATE INDEX finetune_results_task ON finetune_results (task_fingerprint);
COMMIT;
PRAGMA user_version = 3;
