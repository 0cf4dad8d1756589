/*  sdx_clip_bpe.c - the CLIP BPE vocabulary and merges (data/clip_vocab.json,
    data/clip_merges.txt; MIT, see data/LICENSE-CLIP.txt) compiled into the
    engine as two NUL-terminated read-only strings, so that a single-file
    checkpoint generates with no tokenizer folder (sdx_tokenizer_builtin).
    The bytes are pulled in by the assembler's .incbin (no 7 MB generated C
    source); SDX_DATA_DIR is set by meson. */
#ifndef SDX_DATA_DIR
#error "SDX_DATA_DIR must name workers/sdxl/data"
#endif

__asm__(".section .rodata\n"
        ".global sdx_clip_vocab_json\n"
        ".type sdx_clip_vocab_json, @object\n"
        ".balign 16\n"
        "sdx_clip_vocab_json:\n"
        ".incbin \"" SDX_DATA_DIR "/clip_vocab.json\"\n"
        ".byte 0\n"
        ".size sdx_clip_vocab_json, . - sdx_clip_vocab_json\n"
        ".global sdx_clip_merges_txt\n"
        ".type sdx_clip_merges_txt, @object\n"
        ".balign 16\n"
        "sdx_clip_merges_txt:\n"
        ".incbin \"" SDX_DATA_DIR "/clip_merges.txt\"\n"
        ".byte 0\n"
        ".size sdx_clip_merges_txt, . - sdx_clip_merges_txt\n"
        ".previous\n");
