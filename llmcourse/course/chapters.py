"""The chapters of the course: which notebook each one is and which modules it exports.

This table is the one place that names them; the exporter, the command line and the tests
all read it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import CourseError


class UnknownChapter(CourseError, KeyError):
    """No chapter has that assignment id."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


@dataclass(frozen=True)
class ExerciseTests:
    """Package tests of a chapter that check one of its exercises (or its given code).

    `check` shows each package test with its exercise, so a learner knows where to look.
    """

    exercise: int | None  # the exercise they check, as its heading numbers it; None: the chapter's given code
    tests: tuple[str, ...]  # test functions in the chapter's test files
    uses: tuple[int, ...] = ()  # other exercises whose code they run too (a failure may start there)


@dataclass(frozen=True)
class Chapter:
    """One nbgrader assignment: `solutions/<assignment>/<notebook>.ipynb`."""

    number: int
    assignment: str  # nbgrader assignment id, also the folder name
    notebook: str  # notebook file name without .ipynb
    title: str
    modules: tuple[str, ...]  # package modules its `#| export` cells may write
    test_files: tuple[str, ...]  # tests/ files that check those modules
    given_modules: tuple[str, ...] = ()  # of `modules`, those written only by given (ungraded) cells
    package_tests: tuple[ExerciseTests, ...] = ()  # every test function of test_files, by exercise

    @property
    def graded_modules(self) -> tuple[str, ...]:
        """The modules learners write: grading keeps the reference versions of these out of reach."""
        return tuple(m for m in self.modules if m not in self.given_modules)

    def tests_of(self, test: str) -> ExerciseTests | None:
        """The entry of `package_tests` that names the test function `test` (None if none does)."""
        return next((group for group in self.package_tests if test in group.tests), None)

    @property
    def module_names(self) -> tuple[str, ...]:
        """Its modules as Python names them: "models/bert" is llmcourse.models.bert."""
        return tuple(f"llmcourse.{module.replace('/', '.')}" for module in self.modules)

    @property
    def graded_module_names(self) -> tuple[str, ...]:
        return tuple(f"llmcourse.{module.replace('/', '.')}" for module in self.graded_modules)

    def solution_path(self, root: Path) -> Path:
        return Path(root) / "solutions" / self.assignment / f"{self.notebook}.ipynb"

    def exercise_path(self, root: Path) -> Path:
        return Path(root) / "exercises" / self.assignment / f"{self.notebook}.ipynb"


# Which exercise each package test checks. A test of code that is given in the notebook but
# calls the learner's functions goes with the exercise that completes what it tests (the BPE
# tokenizer is whole once exercise 4 is done), the others it runs under `uses`.
TOKENIZER_TESTS = (
    ExerciseTests(None, ("test_char_tokenizer_round_trip_and_unknown",
                         "test_pretokenization_matches_tokenizers_on_every_code_point")),
    ExerciseTests(1, ("test_byte_tokenizer_known_answers", "test_byte_tokenizer_round_trip",
                      "test_byte_tokenizer_keeps_the_text_as_written")),
    ExerciseTests(2, ("test_pair_counts_and_merge_known_answers", "test_pair_counts_and_merge_match_the_definitions",
                      "test_pair_counts_add_to_the_dict_they_are_given")),
    ExerciseTests(3, ("test_learn_merges_reuses_the_id_of_bytes_already_in_the_vocabulary",)),
    ExerciseTests(3, ("test_incremental_training_equals_the_definition",)),
    ExerciseTests(3, ("test_learn_merges_aaabdaaabac",), uses=(4,)),
    ExerciseTests(3, ("test_simple_training_loop_equals_learn_merges", "test_simple_training_loop_on_text",
                      "test_simple_training_loop_reuses_the_id_of_known_bytes"), uses=(2,)),
    ExerciseTests(4, ("test_bpe_round_trips_any_unicode", "test_bpe_round_trip_samples",
                      "test_bpe_compresses_and_counts",
                      "test_overlapping_special_tokens_split_alike_in_training_and_encoding",
                      "test_duplicate_special_tokens_count_once", "test_special_tokens_must_be_non_empty_strings",
                      "test_special_tokens_are_atomic", "test_training_is_deterministic_across_processes",
                      "test_save_load_round_trip", "test_load_refuses_bad_files", "test_train_refuses_too_small_vocab",
                      "test_exported_json_loads_in_tokenizers_with_same_ids",
                      "test_exported_json_splits_overlapping_special_tokens_alike",
                      "test_exported_json_same_ids_on_any_unicode", "test_same_merges_and_ids_as_tokenizers_trainer",
                      "test_encode_cache_is_bounded"), uses=(3,)),
    ExerciseTests(5, ("test_viterbi_is_the_best_split", "test_viterbi_unknown_characters",
                      "test_viterbi_uses_the_longest_piece_and_unknown_score_it_is_given",
                      "test_viterbi_matches_tokenizers_unigram", "test_viterbi_breaks_ties_as_tokenizers_unigram")),
    ExerciseTests(6, ("test_em_step_equals_enumeration", "test_em_never_decreases_likelihood",
                      "test_em_step_visits_only_the_pieces_at_each_position")),
    ExerciseTests(6, ("test_unigram_tokenizer_trains_and_round_trips",
                      "test_unigram_encode_does_not_rescan_the_vocabulary_for_each_chunk",
                      "test_unigram_tokenizer_follows_a_new_vocabulary"), uses=(5,)),
)
EMBEDDING_TESTS = (
    ExerciseTests(1, ("test_embedding_is_one_hot_times_weight_and_matches_torch",
                      "test_embedding_dtype_device_and_bad_ids", "test_embedding_rejects_ids_outside_the_table",
                      "test_embedding_reads_int32_ids_refuses_mask_dtypes_and_starts_standard_normal")),
    ExerciseTests(2, ("test_cosine_matrix_matches_torch", "test_cosine_zero_vectors_and_scale",
                      "test_normalize_rows_keeps_tiny_vectors_unit")),
    ExerciseTests(2, ("test_eps_and_base_arguments_are_used",), uses=(5,)),
    ExerciseTests(3, ("test_top_k_neighbours_against_brute_force",), uses=(2,)),
    ExerciseTests(3, ("test_top_k_accepts_every_key_and_mean_pool_keeps_low_precision",), uses=(2, 4)),
    ExerciseTests(4, ("test_mean_pool_ignores_padding",)),
    ExerciseTests(4, ("test_minilm_recipe_reads_only_the_first_256_tokens",
                      "test_mean_pool_reproduces_the_real_sentence_encoder"), uses=(2,)),
    ExerciseTests(5, ("test_sinusoidal_known_values_and_properties",
                      "test_sinusoidal_low_precision_is_the_float64_table_rounded",
                      "test_sinusoidal_default_dtype_is_torchs_default",
                      "test_sinusoidal_builds_its_float64_table_on_the_cpu")),
)
ATTENTION_TESTS = (
    ExerciseTests(None, ("test_config_derives_fields_and_refuses_impossible_shapes",)),
    ExerciseTests(None, ("test_eager_and_sdpa_agree",), uses=(1, 2, 3)),
    ExerciseTests(1, ("test_the_module_does_not_use_library_attention",), uses=(2, 3, 4, 5)),
    ExerciseTests(1, ("test_sdpa_matches_torch", "test_sdpa_any_shape_with_masks",
                      "test_kv_cache_steps_equal_full_causal_attention"), uses=(2,)),
    ExerciseTests(2, ("test_causal_mask_alignment_and_errors",), uses=(1,)),
    ExerciseTests(4, ("test_multi_head_attention_matches_torch", "test_copying_torch_weights_checks_shapes",
                      "test_grouped_query_attention_matches_llama", "test_grouped_query_attention_bf16_on_cuda",
                      "test_attention_builds_each_projection_once_at_its_size", "test_gqa_variants_and_repeat_kv",
                      "test_attention_layer_switches_implementation"), uses=(1, 2, 3)),
    ExerciseTests(5, ("test_kv_cache_bytes_known_sizes",)),
    ExerciseTests(1, ("test_scale_zero_dtype_head_dim_and_kv_cache_contract",), uses=(2, 3, 4, 5)),
)
TRANSFORMER_TESTS = (
    ExerciseTests(1, ("test_rmsnorm_matches_torch_and_llama",)),
    ExerciseTests(2, ("test_swiglu_and_feedforward_match_formulas",)),
    ExerciseTests(3, ("test_rope_matches_llama", "test_rope_scores_depend_only_on_the_offset",
                      "test_rope_preserves_norms_and_checks_shapes")),
    ExerciseTests(4, ("test_decoder_block_matches_llama_decoder_layer", "test_a_stack_of_blocks_is_a_llama_model",
                      "test_decoder_block_bf16_on_cuda", "test_one_forward_signature_for_every_attention",
                      "test_decoder_block_sdpa_equals_eager"), uses=(1, 2, 3)),
    ExerciseTests(4, ("test_blocks_take_one_config",), uses=(1, 2, 3, 5, 6)),
    ExerciseTests(5, ("test_encoder_block_matches_torch",)),
    ExerciseTests(6, ("test_cross_attention_decoder_block_matches_torch",)),
    ExerciseTests(3, ("test_layers_take_the_dtype_they_are_given_and_rope_reaches_far_positions",), uses=(1, 2)),
    ExerciseTests(4, ("test_blocks_pass_is_causal_and_masks_on",), uses=(1, 2, 3, 6)),
)
VARIANTS_TESTS = (
    ExerciseTests(None, ("test_loading_names_the_tensor_at_fault", "test_checkpoint_round_trip_restores_outputs"),
                  uses=(1, 3, 4)),
    ExerciseTests(None, ("test_shift_right_equals_transformers",
                         "test_gpt2_config_refuses_what_the_model_does_not_compute")),
    ExerciseTests(1, ("test_bert_matches_transformers_bert_model", "test_bert_gradients_match_transformers",
                      "test_minilm_sentence_embeddings_match_transformers", "test_bert_takes_the_dtype_it_is_given")),
    ExerciseTests(2, ("test_mlm_mask_equals_data_collator_for_language_modeling",
                      "test_mlm_mask_proportions_on_a_large_sample")),
    ExerciseTests(2, ("test_bert_for_masked_lm_and_mlm_loss_match_transformers",), uses=(1,)),
    ExerciseTests(3, ("test_relative_position_bucket_matches_transformers",
                      "test_relative_position_bias_matches_compute_bias", "test_t5_matches_transformers",
                      "test_t5_gradients_match_transformers",
                      "test_span_corruption_known_answers", "test_span_corruption_can_be_undone",
                      "test_t5_takes_the_dtype_it_is_given")),
    ExerciseTests(4, ("test_gpt2_matches_transformers", "test_gpt2_gradients_match_transformers",
                      "test_causal_lm_loss_matches_transformers", "test_gpt2_output_layer_is_the_token_embedding",
                      "test_gpt2_takes_the_dtype_it_is_given")),
    ExerciseTests(4, ("test_variants_on_cuda_match_transformers",), uses=(1, 3, 5)),
    ExerciseTests(5, ("test_train_step_equals_a_transformers_training_step", "test_train_step_drives_the_loss_down",
                      "test_sample_draws_as_transformers_generate",
                      "test_sample_is_reproducible_and_keeps_to_its_contract",
                      "test_sample_follows_the_softmax_at_its_temperature"), uses=(4,)),
    ExerciseTests(6, ("test_bert_parameter_count_matches_transformers", "test_t5_parameter_count_matches_transformers",
                      "test_gpt2_parameter_count_matches_transformers",
                      "test_parameter_counts_of_the_published_models")),
    ExerciseTests(6, ("test_parameter_counts_equal_the_models_with_narrow_heads",), uses=(1, 3, 4)),
)
COMPUTATION_TESTS = (
    ExerciseTests(1, ("test_online_logsumexp_and_softmax_equal_torch", "test_online_softmax_extremes_and_dtypes")),
    ExerciseTests(2, ("test_sliding_window_mask_known_answers", "test_sliding_window_attention_equals_dense",
                      "test_sliding_window_memory_is_linear_in_length",
                      "test_sliding_window_attention_inside_mistral")),
    ExerciseTests(3, ("test_block_sparse_layout_by_definition", "test_layout_to_mask_and_refusals")),
    ExerciseTests(3, ("test_block_sparse_attention_equals_dense",
                      "test_block_sparse_attention_rows_without_keys_are_zero")),
    ExerciseTests(4, ("test_linformer_identity_projection_is_attention_and_padding_is_ignored",
                      "test_linformer_is_not_causal_and_its_error_falls_with_k",
                      "test_linformer_layer_equals_the_linformer_package")),
    ExerciseTests(5, ("test_flash_forward_and_backward_equal_attention", "test_flash_attention_with_masks_in_float64",
                      "test_flash_attention_gradcheck_gqa_and_blocked_rows",
                      "test_flash_memory_is_tiles_not_the_score_matrix", "test_flash_causal_skips_future_tiles",
                      "test_flash_attention_on_cuda_in_low_precision")),
    ExerciseTests(6, ("test_forward_matches_sdpa_fp32", "test_forward_fp16", "test_unequal_tiles",
                      "test_scale_and_strided_inputs", "test_causal_never_reads_future_tiles",
                      "test_queries_that_see_no_key",
                      "test_gpu_forward_half", "test_gpu_forward_fp32_is_not_tf32")),
    ExerciseTests(6, ("test_gradients_match_sdpa", "test_gradients_with_shared_key_value_heads",
                      "test_gpu_gradients_half"), uses=(5,)),
    ExerciseTests(None, ("test_sliding_window_attention_refuses_other_shapes",
                         "test_flash_attention_refuses_bad_inputs", "test_bad_inputs_are_refused",
                         "test_bad_block_size_is_refused", "test_imports_and_explains_without_triton")),
)

CHAPTERS: tuple[Chapter, ...] = (
    Chapter(1, "01-tokenizers", "tokenizers", "Tokenizers", ("tokenizer",), ("test_tokenizer.py",),
            package_tests=TOKENIZER_TESTS),
    Chapter(2, "02-embeddings", "embeddings", "Embeddings", ("embeddings",), ("test_embeddings.py",),
            package_tests=EMBEDDING_TESTS),
    Chapter(3, "03-attention", "attention", "Attention", ("config", "attention"), ("test_attention.py",),
            given_modules=("config",), package_tests=ATTENTION_TESTS),
    Chapter(4, "04-transformer", "transformer", "The Transformer block and RoPE", ("transformer",),
            ("test_transformer.py",), package_tests=TRANSFORMER_TESTS),
    Chapter(5, "05-variants", "variants", "BERT, T5 and GPT-2", ("models/weights", "models/bert", "models/t5",
                                                                 "models/gpt2"),
            ("test_variants.py",), given_modules=("models/weights",), package_tests=VARIANTS_TESTS),
    Chapter(6, "06-computation", "computation", "The cost of attention",
            ("flash_attention", "sparse_attention", "kernels/triton_flash_kernel", "kernels/triton_flash"),
            ("test_computation.py", "test_triton_flash.py"), given_modules=("kernels/triton_flash",),
            package_tests=COMPUTATION_TESTS),
)


def chapter_by_assignment(assignment: str) -> Chapter:
    for chapter in CHAPTERS:
        if chapter.assignment == assignment:
            return chapter
    known = ", ".join(c.assignment for c in CHAPTERS)
    raise UnknownChapter(f"no chapter {assignment!r}; the chapters are: {known}")


def module_owner(module: str) -> Chapter | None:
    """The chapter allowed to export `module`, or None if no chapter declares it."""
    for chapter in CHAPTERS:
        if module in chapter.modules:
            return chapter
    return None
